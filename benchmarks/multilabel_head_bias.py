"""Where a multi-label head starts: at zero (every label at 0.5) or at each label's share of
the training photos (task.MultiLabel.initial_bias, RetinaNet's prior initialisation).

Trains efficientnet_lite0 (offline ImageNet weights, 1 frozen + `--epochs` unfrozen) on a
multi-label labels CSV, `multilabel_collages.py`'s collages by default, once per seed with
each start, in this process one after the other, and prints the last epoch's accuracy_multi,
micro/macro F1 and mAP for each (JSON lines). Accuracy, not time, is the point: the two
starts cost the same.

    python benchmarks/multilabel_collages.py /tmp/collages-1000 --train 1000 --valid 300
    python benchmarks/multilabel_head_bias.py /tmp/collages-1000/labels.csv --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import clearclass
from clearclass.training import loop


def one_run(data: Path, start: str, seed: int, size: int, epochs: int, out: Path) -> dict:
    real = loop.set_head_bias
    if start == "zero":  # what every head did before: no bias set, the head's zeros stay
        loop.set_head_bias = lambda model, bias: None
    try:
        run = clearclass.train(data, model="efficientnet_lite0", item_resize=size,
                               epochs=epochs, seed=seed, out=out / f"{start}-{seed}",
                               overwrite=True, onnx=False)
    finally:
        loop.set_head_bias = real
    last = run.history[-1]
    return {"start": start, "seed": seed, "accuracy_multi": last.accuracy, **last.scores,
            "valid_loss": last.valid_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a multi-label labels CSV")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        for seed in args.seeds:
            for start in ("zero", "prior"):
                print(json.dumps(one_run(args.data, start, seed, args.size, args.epochs,
                                         Path(runs))), flush=True)


if __name__ == "__main__":
    main()
