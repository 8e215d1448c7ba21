"""`clearclass demo`: the whole workflow, offline, on the bundled sample of dog photos."""

from __future__ import annotations

import random
from pathlib import Path

from clearclass.progress import say

SAMPLE = Path(__file__).parent / "demo_photos"


def run_demo(out: str | Path = "clearclass-demo", quiet: bool = False) -> Path:
    """Explore, train, evaluate, export and predict on the sample; returns the report path.

    Example: `clearclass.demo.run_demo("clearclass-demo")`.
    """
    from clearclass.evaluation import evaluate
    from clearclass.explore import explore
    from clearclass.export import export_onnx
    from clearclass.predict import load
    from clearclass.training import TrainConfig, train

    out = Path(out)
    say(f"1/5 Exploring the sample ({SAMPLE})", quiet)
    explore(SAMPLE, out=out / "explore", item_resize=224, quiet=quiet)

    say("\n2/5 Fine-tuning efficientnet_lite0: one epoch frozen, one unfrozen", quiet)
    config = TrainConfig(data=str(SAMPLE), out=str(out / "run"), model="efficientnet_lite0",
                         epochs=1, freeze_epochs=1, item_resize=224, batch_size=16,
                         overwrite=True)
    run = train(config, quiet=quiet)

    say("\n3/5 Evaluating on the validation photos", quiet)
    evaluation = evaluate(run.run_dir, quiet=quiet)

    say("\n4/5 Exporting to ONNX", quiet)
    onnx_path = export_onnx(run.model_dir)
    say(f"Wrote {onnx_path} (checked against PyTorch)", quiet)

    say("\n5/5 Predicting three validation photos", quiet)
    classifier = load(run.model_dir)
    photos = random.Random(0).sample(evaluation.paths, 3)
    names = dict(zip(classifier.info.class_ids, classifier.info.class_names))
    for prediction in classifier.predict_many(photos, top_k=3):
        actual = names[Path(prediction.image).parent.name]
        say(f"  {Path(prediction.image).name} (true class {actual}): predicted {prediction.label} "
            f"{prediction.probability:.0%}", quiet)

    report = evaluation.report_dir / "index.html"
    say(f"\nDone. Report: {report}", quiet)
    return report
