"""The learning-rate finder: train briefly with an exponentially rising learning rate.

As fastai's `lr_find`: from 1e-7 to 10 over 100 batches with the body frozen, stopping
once the smoothed loss passes 4x its minimum; the weights are restored afterwards. The
suggestion is fastai's default, the "valley": the middle of the longest stretch over
which the loss keeps falling.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clearclass.model import set_train_mode
from clearclass.progress import bar, say
from clearclass.training.config import TrainConfig
from clearclass.training.loop import (
    TrainingRun,
    _prepare_run_dir,
    freeze_body,
    prepare,
    training_step,
)


@dataclass
class LRFinderResult:
    """Learning rates tried, the smoothed loss at each, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float

    def plot(self, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss (smoothed)")
        i = int(np.argmin(np.abs(np.log(self.lrs) - math.log(self.suggestion))))
        ax.plot(self.lrs[i], self.losses[i], "o", color="tab:red",
                label=f"suggested: {self.suggestion:.1e}")
        ax.legend()
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def lr_find(
    config: TrainConfig | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    quiet: bool = False,
    **settings,
) -> LRFinderResult:
    """Find a good `base_lr`; writes lr_find.png into the run folder.

    Example: `clearclass.lr_find("photos/", model="resnet34").suggestion`.
    """
    config = config or TrainConfig(**settings)
    run = TrainingRun(_prepare_run_dir(config), config)
    session = prepare(config, run, quiet)
    model = session.model
    saved = copy.deepcopy(model.state_dict())
    freeze_body(session, config)
    set_train_mode(model, body_fixed=session.body_fixed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=start_lr, betas=(0.9, 0.99), eps=1e-5,
                                  weight_decay=config.weight_decay)
    growth = (end_lr / start_lr) ** (1 / max(num_steps - 1, 1))
    lrs, losses = [], []
    smoothed, best, step, epoch = 0.0, math.inf, 0, 0
    with bar("finding a learning rate", num_steps, quiet) as progress:
        while step < num_steps:
            session.train_batches.set_epoch(epoch)
            for images, labels in session.train_batches:
                lr = start_lr * growth**step
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = training_step(session, images, labels, optimizer).item()
                # Exponential moving average with bias correction, as fastai smooths.
                smoothed = 0.98 * smoothed + 0.02 * loss
                value = smoothed / (1 - 0.98 ** (step + 1))
                lrs.append(lr)
                losses.append(value)
                best = min(best, value)
                step += 1
                progress.advance()
                if step >= num_steps or not math.isfinite(value) or value > 4 * best:
                    step = num_steps
                    break
            epoch += 1
    model.load_state_dict(saved)
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
    lrs, losses = [f[0] for f in finite], [f[1] for f in finite]
    result = LRFinderResult(lrs, losses, suggest_valley(lrs, losses))
    plot = result.plot(run.run_dir / "lr_find.png")
    say(f"Suggested base learning rate: {result.suggestion:.1e} (plot: {plot}). "
        f"Use it with: clearclass train ... --base-lr {result.suggestion:.1e}", quiet)
    return result


def suggest_valley(lrs: list[float], losses: list[float]) -> float:
    """The learning rate in the middle of the longest run of falling loss.

    The run is the longest decreasing subsequence of the loss curve (ends included), so
    small bumps from noisy batches do not cut it short.
    """
    n = len(losses)
    if n < 3:
        return lrs[0] if lrs else 1e-3
    length = [1] * n
    start_of = list(range(n))
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and length[j] + 1 > length[i]:
                length[i], start_of[i] = length[j] + 1, start_of[j]
    end = max(range(n), key=lambda i: (length[i], -i))
    start = start_of[end]
    return float(lrs[start + (end - start) // 2])
