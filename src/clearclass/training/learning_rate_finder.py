"""The learning-rate finder: train briefly with an exponentially rising learning rate.

As fastai's `lr_find`: from 1e-7 to 10 over 100 batches with the body frozen, stopping
once the smoothed loss passes 4x its minimum; the weights are restored afterwards. The
suggestion is fastai's default, the "valley": the middle of the longest stretch over
which the loss keeps falling.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from clearclass.errors import RunError
from clearclass.model import set_train_mode
from clearclass.progress import bar, say
from clearclass.run_folder import run_folder, run_name
from clearclass.training.config import LR_FIND_SETTINGS, TrainConfig, make_config
from clearclass.training.loop import Setup, Stage, StagePlan, begin_stage, set_up, training_step
from clearclass.training.run import TrainingRun
from clearclass.training.saving import RunSaver

if TYPE_CHECKING:
    from matplotlib.figure import Figure



@dataclass
class LearningRateSuggestion:
    """Learning rates tried, the smoothed training loss at each, and the suggested rate.

    Shown in a notebook as the plot of loss against learning rate.
    """

    learning_rates: list[float]
    losses: list[float]
    suggestion: float
    plot_path: Path | None = field(default=None, repr=False)

    def plot(self) -> Figure:
        """The smoothed loss against the learning rate, the suggestion marked."""
        from clearclass import figures

        return figures.learning_rate_curve(self.learning_rates, self.losses, self.suggestion)

    def _repr_png_(self) -> bytes:
        from clearclass import figures

        return figures.png_bytes(self.plot())


def lr_find(
    data: str | Path | TrainConfig,
    *,
    start_learning_rate: float = 1e-7,
    end_learning_rate: float = 10.0,
    steps: int = 100,
    **settings: Any,
) -> LearningRateSuggestion:
    """Suggest a `learning_rate` for `train`; writes lr_find.png into `out`.

    Takes the same `data` and settings as `train` (but not those of the schedule it
    replaces); `out` defaults to runs/<data>-<model>-lr-find.

    Example:
        found = clearclass.lr_find("photos/", model="efficientnet_lite0", steps=40)
        print(f"{found.suggestion:.1e}")
    """
    config = make_config(data, settings, allowed=LR_FIND_SETTINGS)
    if config.out is None:
        config = dataclasses.replace(config, out=f"runs/{run_name(config)}-lr-find")
    if (Path(config.out).expanduser() / "model").exists():
        raise RunError(f"{config.out} holds a trained model; lr_find writes its plot and the "
                       "split it used into a folder of its own. Choose another out.")
    # The folder (plot, config.json, split.csv) appears whole or not at all.
    with run_folder(dataclasses.replace(config, overwrite=True)) as (run_dir, staging):
        run = TrainingRun(run_dir, config)
        result = _find(run, RunSaver(run, staging=staging), start_learning_rate,
                       end_learning_rate, steps)
        from clearclass import figures

        figures.save(result.plot(), staging.path / "lr_find.png")
        staging.commit()
    result.plot_path = run_dir / "lr_find.png"
    say(f"Suggested learning rate: {result.suggestion:.1e} (plot: {result.plot_path}).")
    return result


def _find(run: TrainingRun, saver: RunSaver, start_learning_rate: float,
          end_learning_rate: float, steps: int) -> LearningRateSuggestion:
    config = run.config
    setup = set_up(run, saver)
    model = setup.model
    saved = copy.deepcopy(model.state_dict())
    plan = StagePlan("frozen", 0, 1, (start_learning_rate, start_learning_rate), 0.99, 25.0)
    with begin_stage(plan, setup, config, run.processes) as stage:
        set_train_mode(model, body_forward_only=stage.body_forward_only)
        # One group at a rate set by hand every step, in place of the stage's schedule.
        stage.state.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=start_learning_rate,
            betas=(0.9, 0.99), eps=1e-5, weight_decay=config.weight_decay)
        rates, losses = _sweep(setup, stage, start_learning_rate, end_learning_rate, steps)
    model.load_state_dict(saved)
    finite = [(rate, loss) for rate, loss in zip(rates, losses) if math.isfinite(loss)]
    rates, losses = [f[0] for f in finite], [f[1] for f in finite]
    return LearningRateSuggestion(rates, losses, suggest_valley(rates, losses))


def _sweep(setup: Setup, stage: Stage, start_learning_rate: float, end_learning_rate: float,
           steps: int) -> tuple[list[float], list[float]]:
    """Train with the learning rate growing exponentially from start to end, a step at a
    time; the smoothed loss at each rate (stopped once it diverges)."""
    optimizer = stage.state.optimizer
    growth = (end_learning_rate / start_learning_rate) ** (1 / max(steps - 1, 1))
    rates, losses = [], []
    smoothed, best, step, epoch = 0.0, math.inf, 0, 0
    with bar("finding a learning rate", steps) as progress:
        while step < steps:
            setup.train_batches.set_epoch(epoch)
            for images, targets in setup.train_batches:
                rate = start_learning_rate * growth**step
                for group in optimizer.param_groups:
                    group["lr"] = rate
                loss = training_step(setup, stage, images, targets).item()
                # Exponential moving average with bias correction, as fastai smooths.
                smoothed = 0.98 * smoothed + 0.02 * loss
                value = smoothed / (1 - 0.98 ** (step + 1))
                rates.append(rate)
                losses.append(value)
                best = min(best, value)
                step += 1
                progress.advance()
                if step >= steps or not math.isfinite(value) or value > 4 * best:
                    step = steps
                    break
            epoch += 1
    return rates, losses


def suggest_valley(rates: list[float], losses: list[float]) -> float:
    """The learning rate in the middle of the longest run of falling loss.

    The run is the longest decreasing subsequence of the loss curve (ends included), so
    small bumps from noisy batches do not cut it short.
    """
    n = len(losses)
    if n < 3:
        return rates[0] if rates else 1e-3
    length = [1] * n
    start_of = list(range(n))
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and length[j] + 1 > length[i]:
                length[i], start_of[i] = length[j] + 1, start_of[j]
    end = max(range(n), key=lambda i: (length[i], -i))
    start = start_of[end]
    return float(rates[start + (end - start) // 2])
