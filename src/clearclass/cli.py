"""The `clearclass` command. It parses options, calls the library and formats results.

The options of `train`, `lr-find` and `explore` are built from `TrainConfig`'s fields
(`with_settings`), so their names, types, defaults and help are written once, in
`training/config.py`. The library raises `ClearclassError` with a message that says what to
do; here it becomes one red line and exit status 1 (`--debug` shows the traceback instead).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import shlex
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

import clearclass
from clearclass import fileio, progress
from clearclass.errors import ClearclassError, RunError, SettingError
from clearclass.training.config import (
    EXPLORE_SETTINGS,
    LR_FIND_SETTINGS,
    NAMES,
    OLD_VALUES,
    RENAMED,
    RESUME_SETTINGS,
    TrainConfig,
    setting_types,
)

app = typer.Typer(
    name="clearclass",
    help="Turn folders of photos into an image classifier you understand and can ship.\n\n"
         "Typical use: clearclass explore DATA, clearclass train DATA --out RUN, "
         "clearclass evaluate RUN, clearclass predict RUN/model PHOTO.jpg.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
_state = {"debug": False}
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

DataArg = Annotated[str, typer.Argument(help=_FIELDS["data"].metadata["help"],
                                        show_default=False, metavar="DATA")]
RunArg = Annotated[Path, typer.Argument(help="A run folder written by `clearclass train`.",
                                        show_default=False, metavar="RUN")]
ModelArg = Annotated[Path, typer.Argument(help="A model folder (RUN/model) or a run folder.",
                                          show_default=False, metavar="MODEL")]
# A str, not a Path: Path would change `hf-hub:OWNER/NAME` (a model on the Hugging Face Hub).
ModelRefArg = Annotated[str, typer.Argument(
    help="A model folder (RUN/model), a run folder, or hf-hub:OWNER/NAME (a model on the "
         "Hugging Face Hub, fetched once into its cache).", show_default=False,
    metavar="MODEL")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only results and errors.")]
# `predict` and `serve`. Checked by predict.check_threshold rather than click's range: one
# line, exit status 1, and NaN refused too (it passes a range check: every comparison with it
# is false).
Threshold = Annotated[float | None, typer.Option(
    help="Multi-label models: predict every label whose probability reaches this (0 to 1), "
         "instead of the thresholds in model.json.", show_default="model.json's")]
Folds = Annotated[int, typer.Option(
    help="How many heads on the network's features judge the labels, each photo by one that "
         "never saw it (fewer, said, when a class has fewer photos).", min=2)]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option(name: str, *, flag_name: str | None = None, hidden: bool = False,
            shown_default: str | None = None) -> Any:
    """The typer annotation of TrainConfig field `name` (under `flag_name` if an alias;
    `shown_default`: what --help gives as its default, where a command has its own)."""
    meta, kind = _FIELDS[name].metadata, setting_types()[name]
    flag = _flag(flag_name or name)
    extra: dict[str, Any] = {}
    if typing.get_origin(kind) is tuple:  # names given once each: --track a --track b
        kind, extra = list[str], {"metavar": "<name>"}
    # Booleans are switches with a --no- form: --onnx/--no-onnx.
    decls = (f"{flag}/--no-{flag[2:]}",) if kind in (bool, bool | None) else (flag,)
    if hidden:
        kind = kind | None
        return Annotated[kind, typer.Option(*decls, hidden=True,
                                            help=f"Old name of {_flag(name)}.")]
    return Annotated[kind, typer.Option(*decls, help=meta["help"],
                                        rich_help_panel=meta["group"] + " options",
                                        show_default=shown_default or meta["default_text"]
                                        or True, **extra)]


def _old_switch(name: str) -> Any:
    """The hidden --no-NAME flag of a setting that was a switch (OLD_VALUES has its False)."""
    flag = _flag(name)
    return Annotated[bool, typer.Option(f"--no-{flag[2:]}", hidden=True,
                                        help=f"Old form of {flag} {OLD_VALUES[name][False]}.")]


def with_settings(names: Sequence[str], shown_defaults: dict[str, str] | None = None
                  ) -> Callable:
    """Give a command one option per TrainConfig field in `names`, plus the hidden old names.

    The command receives them as `settings`, a dict of field name to value (an old name
    given on the command line is passed under its new name, an old switch as its value).
    `shown_defaults`: what --help gives as a setting's default where the command has its own
    (evaluate's --label-delimiter is the run's).
    """
    shown_defaults = shown_defaults or {}
    aliases = {old: new for old, new in RENAMED.items() if new in names}
    switches = [name for name, values in OLD_VALUES.items() if name in names and False in values]

    def decorate(command: Callable) -> Callable:
        own = inspect.signature(command, eval_str=True).parameters.values()
        params = [p for p in own if p.name != "settings"]
        params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                     default=_FIELDS[name].default,
                                     annotation=_option(name,
                                                        shown_default=shown_defaults.get(name)))
                   for name in names]
        params += [inspect.Parameter(old, inspect.Parameter.KEYWORD_ONLY, default=None,
                                     annotation=_option(new, flag_name=old, hidden=True))
                   for old, new in aliases.items()]
        params += [inspect.Parameter(f"no_{name}", inspect.Parameter.KEYWORD_ONLY,
                                     default=False, annotation=_old_switch(name))
                   for name in switches]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            settings = {name: values.pop(name) for name in names}
            for old, new in aliases.items():
                given = values.pop(old)
                if given is not None:
                    settings[new] = given
            for name in switches:
                if values.pop(f"no_{name}"):
                    new = OLD_VALUES[name][False]
                    if settings[name] not in (_FIELDS[name].default, new):
                        raise SettingError(name, f"was given twice: --no-{_flag(name)[2:]} is "
                                                 f"the old form of {_flag(name)} {new}; give "
                                                 f"only {_flag(name)}.")
                    settings[name] = new
            return command(**values, settings=settings)

        run.__signature__ = inspect.Signature(params)  # what typer reads the options from
        run.__annotations__ = {}
        return run

    return decorate


TRAIN_SETTINGS = tuple(n for n in NAMES if n != "data")  # DATA is the argument


@contextlib.contextmanager
def _output(quiet: bool) -> Iterator[None]:
    """Messages and progress bars unless --quiet (then only results and errors)."""
    with progress.quiet() if quiet else contextlib.nullcontext():
        yield


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clearclass {clearclass.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show the full traceback when something goes wrong.")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
@with_settings(TRAIN_SETTINGS)
def train(
    ctx: typer.Context,
    data: Annotated[str | None, typer.Argument(
        help=_FIELDS["data"].metadata["help"], show_default=False, metavar="DATA")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue the run in this folder from its last checkpoint, with its own "
             "settings (instead of DATA). Only how it runs may be given with it: "
             f"{', '.join(map(_flag, RESUME_SETTINGS))}; any other option is refused.",
        metavar="RUN", show_default=False)] = None,
    processes: Annotated[int, typer.Option(
        help="Train in this many processes on this machine, one per GPU (or a core each on "
             "the CPU), through torchrun; --batch-size stays the total of one step and must "
             "divide among them. More processes than GPUs or cores is refused before any "
             "starts; stopping this command (Ctrl-C, SIGTERM, even SIGKILL) stops them all.",
        min=1)] = 1,
    quiet: Quiet = False,
    *,
    settings: dict,
) -> None:
    """Fine-tune a pretrained model on labelled photos, as fastai's fine_tune does.

    Example: clearclass train photos/ --model efficientnet_lite0 --epochs 3 --out runs/dogs

    Shows a row per epoch (epoch, train_loss, valid_loss, accuracy, time), also saved to
    RUN/metrics.csv. The model is saved as RUN/model (model.safetensors + model.json) after
    every epoch, with a checkpoint that `clearclass train --resume RUN` continues from
    (also saved every --checkpoint-minutes, and on Ctrl-C). Unreadable photos are skipped
    and listed in RUN/skipped.csv.
    """
    from clearclass.training import launch

    if (data is None) == (resume is None):
        raise SettingError("data", "give the photos (DATA) to start a run, or --resume RUN "
                                   "to continue one; not both." if data else
                           "is missing: give the photos (DATA), or --resume RUN.")
    given = _given(ctx, settings)
    if resume is not None:
        _refuse_unresumable(resume, given)
    if processes > 1:
        if "TORCHELASTIC_RUN_ID" in os.environ:
            raise SettingError("processes", f"{processes} was given to a process that torchrun "
                                            "started: its --nproc-per-node says how many "
                                            "processes train. Leave out --processes.")
        saved = launch.saved_settings(resume) if resume is not None else settings
        launch.check(processes, given.get("device", saved.get("device", "auto")),
                     saved.get("batch_size"), resume)
        sys.exit(_torchrun(processes, data, resume, quiet, given))
    launch.end_with_launcher()  # a process that torchrun started ends with it
    from clearclass.training import resume as resume_training
    from clearclass.training import train as run_training

    with _output(quiet), _errors_to_launcher():
        if resume is not None:
            run = resume_training(resume, **given)
        else:
            run = run_training(data, **settings)
    if not quiet and run.processes.main:
        typer.echo(f"Next: clearclass evaluate {shlex.quote(str(run.run_dir))}")


def _given(ctx: typer.Context, settings: dict) -> dict:
    """The settings the user gave (on the command line, or in the environment), whatever
    their value: `--epochs 1` is given even though 1 is the default. An old name given
    (`--base-lr`, `--no-cache`) gives the setting it became."""
    def typed(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")

    return {name: value for name, value in settings.items()
            if typed(name) or typed(f"no_{name}")
            or any(typed(old) for old, new in RENAMED.items() if new == name)}


def _refuse_unresumable(run: Path, given: dict) -> None:
    """A resumed run keeps its settings: any other than how it runs (RESUME_SETTINGS) is
    refused, whatever its value, rather than dropped."""
    kept = [name for name in given if name not in RESUME_SETTINGS]
    if not kept:
        return
    flags = " and ".join(_flag(name) for name in kept)
    to_do = "To train with other settings, start a new run (clearclass train DATA ...)"
    if {"epochs", "freeze_epochs"} & set(kept):
        weights = run / "model" / "model.safetensors"
        to_do = ("To train longer, start a new run from what this one learnt: clearclass "
                 f"train DATA --weights {shlex.quote(str(weights))} --epochs N --out NEW")
    raise RunError(f"{flags} cannot change when resuming: a resumed run keeps its own "
                   f"settings ({run / 'config.json'}) and ends as the uninterrupted run "
                   f"would. {to_do}; --resume may change only "
                   f"{', '.join(map(_flag, RESUME_SETTINGS))}.")


def _torchrun(processes: int, data: str | None, resume: Path | None, quiet: bool,
              given: dict) -> int:
    """Run this same command in `processes` processes under torchrun; its exit status."""
    from clearclass.training import launch

    args = [data] if data is not None else ["--resume", str(resume)]
    for name, value in given.items():  # exactly what the user gave, under current names
        flag = _flag(name)
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, (list, tuple)):
            for item in value:
                args += [flag, str(item)]
        elif value is not None:
            args += [flag, str(value)]
    if quiet:
        args.append("--quiet")
    args = ["--debug", "train", *args] if _state["debug"] else ["train", *args]
    with _output(quiet):
        progress.say("Starting: " + shlex.join(["torchrun", "--standalone",
                                                f"--nproc-per-node={processes}", "-m",
                                                "clearclass", *args]))
    return launch.run(processes, args, debug=_state["debug"])


@contextlib.contextmanager
def _errors_to_launcher() -> Iterator[None]:
    """In a process that `train --processes N` started, an error is left to the launcher,
    which prints each different one once (not N times under torchrun's traceback)."""
    from clearclass.training import launch

    try:
        yield
    except (ClearclassError, OSError) as e:
        if _state["debug"] or not launch.report_error(_message(e)):
            raise
        sys.exit(1)


@app.command()
@with_settings(("device", "label_delimiter"),
               shown_defaults={"label_delimiter": "the run's"})
def evaluate(
    run: RunArg,
    data: Annotated[Path | None, typer.Option(
        help="Evaluate on this labelled folder or CSV (a held-out test set) instead of the "
             "run's validation photos: its held-out photos when it marks them (valid/ or "
             "test/ beside train/, an is_valid column), else every photo; the report goes "
             "to RUN/report-NAME/. Any of the model's classes, with any number of photos "
             "each; classes are matched to the model's by folder name (or CSV label), "
             "display name or WordNet id. Photos the run trained on are counted in a "
             "warning.",
        show_default=False, metavar="DIR")] = None,
    exclude_training: Annotated[bool, typer.Option(
        "--exclude-training",
        help="Leave out the photos the run trained on (its split.csv's training photos: the "
             "same file, or a copy of its bytes), so that the accuracy is on unseen "
             "photos.")] = False,
    tta: Annotated[bool, typer.Option(
        "--tta", help="Test-time augmentation: also predict each photo's mirror image and "
                      "report the accuracy of the two averaged (twice the time).")] = False,
    top_losses: Annotated[int, typer.Option(
        help="How many of the worst-predicted photos to show.")] = 16,
    quiet: Quiet = False,
    *,
    settings: dict,
) -> None:
    """Evaluate a trained run on its validation photos (or --data) and write RUN/report/.

    Example: clearclass evaluate runs/dogs --tta

    Prints accuracy, top-5 accuracy and the most confused pairs, and writes into RUN/report/
    a self-contained index.html (a confusion matrix with the classes confused with each other
    side by side: point at a cell for its figures, click it for its photos; the most confused
    pairs; a sortable per-class table; top losses; calibration), with confusion.png,
    most_confused.csv/.png, per_class.csv (in the matrix's order), top_losses.png and
    calibration.png.

    A multi-label run (train --task multi) is evaluated at the thresholds of its model.json:
    accuracy_multi, micro and macro F1 and mean average precision; per label, precision,
    recall, F1, average precision and support (per_label.csv); the labels given in place of
    others (confused_labels.csv); precision-recall curves; top losses with the labels given
    beside the true ones. --data reads a CSV's label cells as sets of labels, split as the
    run's were unless --label-delimiter says otherwise (a test CSV written with '|' for a run
    trained on ';').
    """
    from clearclass.evaluation import evaluate as run_evaluation

    with _output(quiet):
        evaluation = run_evaluation(run, data=data, tta=tta, top_losses=top_losses,
                                    exclude_training=exclude_training, **settings)
    typer.echo(evaluation.summary())


@app.command()
@with_settings(("device",))
def advise(
    run: RunArg,
    target: Annotated[str | None, typer.Option(
        help="The accuracy to count photos needed for, as a fraction (0.92 for 92%). "
             "Default: the run's accuracy plus 5 points, at most 0.99.",
        show_default=False, metavar="ACCURACY")] = None,
    folds: Folds = 5,
    quiet: Quiet = False,
    *,
    settings: dict,
) -> None:
    """Say what to fix in a run's photos next: a row per class and the three things most
    worth doing.

    Example: clearclass advise runs/dogs --target 0.9

    For each class: its photos, the run's accuracy on it, the class it is most confused
    with, the photos that look mislabelled, unlike any class or duplicated (as `clearclass
    clean` finds them, judged by heads that never saw them), and how many photos the
    learning curve says it needs for the target accuracy. Warns when the classes are
    imbalanced. Writes RUN/advice/classes.csv and RUN/advice/index.html (with the learning
    curves). A multi-label run gets a row per label and F1 for accuracy (--target is then
    an F1); the imbalance warning names the rare labels.
    """
    from clearclass.advice import advise as run_advice

    with _output(quiet):
        advice = run_advice(run, target=_accuracy(target), folds=folds, **settings)
    progress.console.print(advice.to_table())
    typer.echo(advice.summary())


def _accuracy(text: str | None) -> float | None:
    """--target's text as a number (`advise` checks it is an accuracy)."""
    if text is None:
        return None
    try:
        return float(text.strip().rstrip("%")) / (100 if text.strip().endswith("%") else 1)
    except ValueError:
        raise SettingError("target", f"must be an accuracy such as 0.92 (or 92%); got "
                                     f"{text!r}.") from None


@app.command()
@with_settings(("device",))
def clean(
    run: RunArg,
    actions: Annotated[Path | None, typer.Option(
        "--apply", help="Apply this actions.csv (RUN/clean/actions.csv, edited) to the photos: "
                        "delete moves a photo into RUN/clean/removed/, relabel moves it into "
                        "its new class folder (or edits a labels CSV; multi-label: new_label "
                        "is the photo's whole new set of labels, or (none)).",
        metavar="ACTIONS_CSV", show_default=False)] = None,
    undo: Annotated[bool, typer.Option(
        "--undo", help="Put the photos back as they were before the last --apply, one "
                       "stopped half-way too.")] = False,
    folds: Folds = 5,
    quiet: Quiet = False,
    *,
    settings: dict,
) -> None:
    """List photos that look mislabelled, unlike any class, duplicated or unreadable, and
    fix them reversibly.

    Example: clearclass clean runs/dogs

    Computes the model's features of every photo of the run (training and validation) and
    lists, most likely problem first: photos whose label cleanlab finds unlikely when they
    are judged by heads that never saw them (5 folds), photos far from every class (a
    blank frame, another kind of thing), identical or near copies (pHash, or alike to the
    model) across train and valid or across classes, and unreadable files. Writes
    RUN/clean/actions.csv (keep, relabel or delete each photo, with the evidence: edit it)
    and RUN/clean/index.html (the same with thumbnails). --apply changes the photos as the
    file says, logging each change; --undo reverses them. Then train again. A multi-label
    run is judged label by label (a head per label; cleanlab's multi-label filter), and a
    relabel gives the photo a whole new set of labels.
    """
    from clearclass import cleaning

    if actions is not None and undo:
        raise SettingError("undo", "and --apply were both given; give one of them.")
    with _output(quiet):
        if undo:
            cleaning.undo(run)
            return
        if actions is not None:
            cleaning.apply_actions(run, actions)
            return
        found = cleaning.clean(run, folds=folds, **settings)
    progress.console.print(found.to_table())
    typer.echo(found.summary(rows=0))
    if found.actions:
        typer.echo(f"Next: edit the actions, then: clearclass clean {shlex.quote(str(run))} "
                   f"--apply {shlex.quote(str(found.folder / cleaning.ACTIONS_FILE))}")


@app.command()
@with_settings(("device",))
def predict(
    model: ModelRefArg,
    images: Annotated[list[Path], typer.Argument(
        help="Photos, or folders searched for photos.", show_default=False,
        metavar="IMAGE_OR_FOLDER...")],
    top_k: Annotated[int, typer.Option(help="How many most likely classes to list.")] = 3,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print a JSON list, one object per photo: image, label, class_id, "
                       "probability, top_k (a multi-label model: image, labels, class_ids, "
                       "predicted, probabilities); or image and error for one that could not "
                       "be read.")] = False,
    threshold: Threshold = None,
    *,
    settings: dict,
) -> None:
    """Predict the class of photos with a trained model (a multi-label model: the set of
    labels over their thresholds, with every label's probability).

    Example: clearclass predict runs/dogs/model new.jpg photos/ --top-k 3 --json

    A photo that cannot be read, a path that does not exist and a folder with no images
    are each reported on stderr ("error: PATH: reason"; with --json, also as an object
    {"image", "error"} in the list), and the other photos are predicted.

    Exit status: 0 when every photo was predicted; 3 when some could not be (the others'
    results are printed); 1 when nothing was predicted because the model or an option is
    wrong (one line on stderr says what to do); 2 for a command line that cannot be parsed.
    """
    from clearclass.predict import check_threshold, check_top_k, image_files, load

    check_top_k(top_k)  # before the model is loaded
    if threshold is not None:
        check_threshold(threshold)
    classifier = load(model, device=settings["device"], threshold=threshold)
    files = image_files(images, unreadable="report")
    results = classifier.predict_many(files, top_k=top_k, unreadable="report")
    for r in results:
        if r.error is not None:
            typer.echo(f"error: {r.image}: {r.error}", err=True)
    if as_json:
        typer.echo(fileio.json_text([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            if r.error is None and r.labels is not None:  # multi-label: the set
                chosen = ", ".join(f"{t['label']} ({t['probability']:.1%})" for t in r.labels)
                typer.echo(f"{r.image}: " + (chosen or "no label over its threshold; most "
                                             f"likely {r.top_k[0]['label']} "
                                             f"({r.top_k[0]['probability']:.1%})"))
            elif r.error is None:
                others = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in r.top_k[1:])
                typer.echo(f"{r.image}: {r.class_name} ({r.probability:.1%})"
                           + (f"; then {others}" if others else ""))
    if any(r.error is not None for r in results):
        raise typer.Exit(3)  # some inputs failed; the exit statuses are in the help


@app.command()
@with_settings(EXPLORE_SETTINGS)
def explore(
    data: DataArg,
    out: Annotated[Path | None, typer.Option(
        help="Folder for the figures and unreadable.csv.",
        show_default="runs/explore-<data>")] = None,
    quiet: Quiet = False,
    *,
    settings: dict,
) -> None:
    """Look at a dataset before training: counts, sizes, unreadable files, samples.

    Example: clearclass explore photos/

    Prints photos per class (train and validation), photo size statistics and unreadable
    files, and warns when the largest class has more than 3 times the training photos of
    the smallest; writes samples.png (photos of each class), augmented.png (what batch
    augmentation does to a few photos) and batch.png (a batch as training sees it, as
    fastai's show_batch) into OUT. A multi-label CSV (--task, --label-delimiter): photos
    with each label, how many labels the photos have, the labels that occur together most
    often, and cooccurrence.png (a heatmap of the 30 labels on the most photos); the
    warning names the rare labels, with their photos with and without them.
    """
    from clearclass.exploration import explore as run_explore
    from clearclass.exploration import print_report

    out = out or Path("runs") / f"explore-{Path(data).stem or 'data'}"
    with _output(quiet):
        print_report(run_explore(data, out=out, **settings))


@app.command("lr-find")
@with_settings(tuple(n for n in LR_FIND_SETTINGS if n not in ("data", "out")))
def lr_find(
    data: DataArg,
    out: Annotated[Path | None, typer.Option(
        help="Folder for lr_find.png.", show_default="runs/<data>-<model>-lr-find")] = None,
    steps: Annotated[int, typer.Option(
        min=5, help="Training steps while the rate rises; fewer is quicker and the curve "
                    "coarser.")] = 100,
    quiet: Quiet = False,
    *,
    settings: dict,
) -> None:
    """Suggest a learning rate: train briefly while raising it, and plot the loss.

    Example: clearclass lr-find photos/ --model efficientnet_lite0 --steps 40

    As fastai's lr_find: 100 steps from 1e-7 to 10 with the body frozen; the suggestion is
    the middle of the longest fall of the loss ("valley"). Use it as --learning-rate.
    With --quiet, prints only the suggested rate.
    """
    from clearclass.training import lr_find as run_lr_find

    with _output(quiet):
        found = run_lr_find(data, out=out, steps=steps, **settings)
    if quiet:
        typer.echo(f"{found.suggestion:.2e}")
    else:
        typer.echo(f"Use it with: clearclass train {shlex.quote(data)} --learning-rate "
                   f"{found.suggestion:.1e}")


@app.command()
def runs(
    folder: Annotated[Path, typer.Argument(
        help="A folder of runs, searched at any depth (or one run folder).",
        metavar="FOLDER")] = Path("runs"),
    plot: Annotated[Path | None, typer.Option(
        help="Also draw every run's validation accuracy and loss per epoch on one figure "
             "(the 12 newest runs) and write it here: .png, .svg or .pdf.",
        metavar="FILE", show_default=False)] = None,
    csv: Annotated[Path | None, typer.Option(
        help="Also write the table to this CSV file (numbers unformatted).",
        metavar="FILE", show_default=False)] = None,
) -> None:
    """List the training runs under FOLDER in one table, newest first.

    Example: clearclass runs runs/ --plot runs.png

    One row per run: its folder, the photos' folder, model, size (px), epochs done of those
    planned (a run stopped or still training says so), photos (train/valid), classes,
    validation accuracy of the last epoch, accuracy with test-time augmentation (after
    `clearclass evaluate RUN --tta`), training time, device, when its last epoch was saved,
    and the settings that differ between the runs. A run whose files are damaged is listed
    with what can be read, and a line says which.
    """
    from clearclass.runs_table import check_plot_path
    from clearclass.runs_table import runs as list_runs

    target = check_plot_path(plot) if plot is not None else None  # before reading any run
    found = list_runs(folder)
    if progress.console.is_terminal:
        progress.console.print(found.to_table())
    else:  # a pipe or a file: every column whole, one line per run, for grep and cut
        typer.echo(found.text())
    for note in found.notes:
        progress.err_console.print(f"[yellow]note:[/yellow] {_escape(note)}")
    if csv is not None:
        typer.echo(f"Wrote {found.to_csv(csv)}")
    if target is not None:
        from clearclass import figures

        path, suffix = target
        typer.echo(f"Wrote {figures.save(found.plot(), path, format=suffix)}")


@app.command()
def serve(
    model: ModelRefArg,
    host: Annotated[str, typer.Option(
        help="Address to listen on; 0.0.0.0 for every network interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(
        min=1, help="Server processes; the cores and --decode-memory-mb are shared among "
                    "them (at most 4 per core).")] = 1,
    max_upload_mb: Annotated[float, typer.Option(
        min=0.001, help="Largest photo accepted, in MB (larger ones get 413 as soon as the "
                        "bytes past the limit arrive). A request may have 32 photos.")] = 10.0,
    max_megapixels: Annotated[float, typer.Option(
        min=0.001, help="Most pixels a photo may decode into, in millions (a JPEG counts "
                        "the pixels of its reduced-scale decoding); more: 400, refused from "
                        "the header, before decoding.")] = 80.0,
    decode_memory_mb: Annotated[float, typer.Option(
        min=1, help="Memory for the photos decoded at once, in MB, for the whole server: "
                    "each photo's need is estimated from its header (pixels, colour mode, "
                    "what the resize makes); photos wait their turn while others hold it, "
                    "and one that needs more than all of it gets 400.")] = 1100.0,
    threshold: Threshold = None,
) -> None:
    """Serve a model: a web page to try photos on, and an HTTP API.

    Example: clearclass serve runs/dogs/model --port 8000

    Open http://127.0.0.1:8000/ in a browser, or: curl -F file=@photo.jpg
    http://127.0.0.1:8000/predict (the JSON of `clearclass predict --json`). Also GET
    /health, GET /model and the OpenAPI docs at /docs. Stop it with Ctrl-C. A multi-label
    model decides with model.json's thresholds, or --threshold for every label; GET /model
    and the page show the thresholds it decides with.

    Memory: what Python, ONNX Runtime and the model take (0.11 GB with a tiny model),
    --decode-memory-mb for decoding, and the uploads of the requests in progress, at most
    twice the largest request (32 x --max-upload-mb; beyond, 503 until some finish;
    uploads over 1 MB wait in the temporary folder, $TMPDIR). A port in use is one error
    line and exit status 1.
    """
    try:
        from clearclass.serve import serve as run_server
    except ImportError as e:
        raise ClearclassError(f"Serving needs FastAPI and uvicorn ({e}); install them with "
                              "pip install 'clearclass[serve]'.") from None
    run_server(model, host=host, port=port, workers=workers,
               max_upload_bytes=int(max_upload_mb * 1_000_000),
               max_pixels=int(max_megapixels * 1_000_000),
               decode_memory_bytes=int(decode_memory_mb * 1_000_000), threshold=threshold)


@app.command()
def export(
    model: ModelArg,
    check: Annotated[bool, typer.Option(
        help="Run the ONNX file once and compare it with PyTorch.")] = True,
) -> None:
    """Export a model to ONNX (model.onnx, beside model.safetensors) for ONNX Runtime.

    Example: clearclass export runs/dogs/model

    The ONNX model takes normalised images (N x 3 x size x size; size, mean and std are in
    model.json) and returns "logits" and "probabilities" (softmax; a multi-label model's
    sigmoid per label, whose thresholds are in model.json), so prediction needs no PyTorch.
    Its metadata says what they mean without model.json: "task" (single or multi),
    "class_ids" and a multi-label model's "thresholds" (JSON lists in the outputs' order).
    """
    from clearclass.export import export_onnx

    path = export_onnx(model, check=check)
    typer.echo(f"Wrote {path}" + (" (checked against PyTorch)" if check else ""))


@app.command()
def push(
    model: ModelArg,
    repo_id: Annotated[str, typer.Argument(
        help="The model's name on the Hub: OWNER/NAME (your account or organisation, then a "
             "name).", show_default=False, metavar="OWNER/NAME")],
    private: Annotated[bool, typer.Option(
        "--private", help="Create the repository private (an existing one keeps its "
                          "visibility).")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Write the folder that would be uploaded into --out and send "
                          "nothing.")] = False,
    out: Annotated[Path | None, typer.Option(
        help="With --dry-run: a new or empty folder for the files.", show_default=False,
        metavar="DIR")] = None,
    quiet: Quiet = False,
) -> None:
    """Share a model on the Hugging Face Hub, with a model card and timm's config.json.

    Example: clearclass push runs/dogs/model you/dog-breeds --dry-run --out dogs-for-the-hub

    Uploads model.safetensors, model.json and model.onnx as they are (no absolute path: the
    data folder is named by its name), a README.md model card (classes, data, accuracy,
    most confused classes, settings, how to predict with clearclass, timm and ONNX Runtime)
    and timm's config.json, so that timm.create_model("hf-hub:OWNER/NAME", pretrained=True)
    loads it too. The token is huggingface_hub's: `hf auth login`, or HF_TOKEN. Then:
    clearclass predict hf-hub:OWNER/NAME photo.jpg.
    """
    from clearclass.hub import push as run_push

    with _output(quiet):
        where = run_push(model, repo_id, private=private, dry_run=dry_run, out=out)
    typer.echo(f"Wrote {where} (nothing was uploaded)" if dry_run else f"Uploaded to {where}")


@app.command()
def cache(
    clear: Annotated[bool, typer.Option(
        "--clear", help="Delete every decoded photo in the cache.")] = False,
) -> None:
    """Show where decoded photos are cached and how much room they take, or clear it.

    Example: clearclass cache --clear

    Training (with --cache disk, the default) keeps each photo decoded and resized in this
    folder, named by the file's bytes, so the next run skips decoding; it may fill the
    disk's free space less 10% (--cache-limit). Deleting it is always safe. Set
    CLEARCLASS_CACHE_DIR to move it.
    """
    from clearclass.data import cache as pixel_cache
    from clearclass.data.budget import format_size, free_space

    folder = pixel_cache.default_cache_dir()
    if clear:
        typer.echo(f"Deleted {pixel_cache.clear(folder)} decoded photo(s) from {folder}")
        return
    entries, size = pixel_cache.usage(folder)
    typer.echo(f"{folder}: {entries} decoded photo(s), {size / 1e6:.1f} MB; "
               f"{format_size(free_space(folder))} free on its disk")


download_app = typer.Typer(
    name="download",
    help="Download a dataset: from Kaggle, or a well-known public one (Imagewoof, "
         "Imagenette, Stanford Dogs), unpacked and ready for `clearclass train`.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)
app.add_typer(download_app)

DownloadOut = Annotated[Path, typer.Option(help="Folder to put the dataset in.")]
KeepArchives = Annotated[bool, typer.Option(
    help="Keep the downloaded archives after unpacking them.")]
Timeout = Annotated[float, typer.Option(
    help="Seconds a server may take to answer, or to send the next bytes.")]
Retries = Annotated[int, typer.Option(
    help="Retries of a failed request (connection error, timeout, 5xx, 429).")]


@download_app.command("kaggle")
def download_kaggle(
    dataset: Annotated[str, typer.Argument(
        help="The Kaggle dataset, OWNER/DATASET as in its URL (the URL itself works too).",
        show_default=False, metavar="OWNER/DATASET")],
    out: DownloadOut = Path("data"),
    keep_archives: KeepArchives = False,
    quiet: Quiet = False,
) -> None:
    """Download a Kaggle dataset with the kaggle package, unzip it, and say what to train on.

    Example: clearclass download kaggle jessicali9530/stanford-dogs-dataset --out data

    Credentials come from ~/.kaggle/kaggle.json or KAGGLE_USERNAME and KAGGLE_KEY (create
    a token at https://www.kaggle.com/settings). The Stanford Dogs layout is recognised.
    """
    from clearclass.acquire import download_kaggle as run

    with _output(quiet):
        run(dataset, out=out, keep_archives=keep_archives)


def _public_dataset(name: str, size: str, out: Path, keep_archives: bool, timeout: float,
                    retries: int, quiet: bool) -> None:
    from clearclass.acquire import download_dataset

    with _output(quiet):
        download_dataset(name, size=size, out=out, keep_archives=keep_archives,
                         timeout=timeout, retries=retries)


Size = Annotated[str, typer.Option(
    help="fastai's release: full (originals), 320 or 160 (short side in pixels).")]


@download_app.command("imagewoof")
def download_imagewoof(out: DownloadOut = Path("data"), size: Size = "320",
                       keep_archives: KeepArchives = False, timeout: Timeout = 30.0,
                       retries: Retries = 3, quiet: Quiet = False) -> None:
    """Download Imagewoof (10 dog breeds from ImageNet) with its official train/val split.

    Example: clearclass download imagewoof --size 320 --out data

    Resumes a partial download, checks the published MD5, and writes labels.csv
    (path,label,is_valid) for `clearclass train`.
    """
    _public_dataset("imagewoof", size, out, keep_archives, timeout, retries, quiet)


@download_app.command("imagenette")
def download_imagenette(out: DownloadOut = Path("data"), size: Size = "320",
                        keep_archives: KeepArchives = False, timeout: Timeout = 30.0,
                        retries: Retries = 3, quiet: Quiet = False) -> None:
    """Download Imagenette (10 easy ImageNet classes) with its official train/val split.

    Example: clearclass download imagenette --size 160 --out data

    Resumes a partial download, checks the published MD5, and writes labels.csv
    (path,label,is_valid) for `clearclass train`.
    """
    _public_dataset("imagenette", size, out, keep_archives, timeout, retries, quiet)


@download_app.command("stanford-dogs")
def download_stanford_dogs(out: DownloadOut = Path("data"),
                           keep_archives: KeepArchives = False, timeout: Timeout = 30.0,
                           retries: Retries = 3, quiet: Quiet = False) -> None:
    """Download Stanford Dogs (120 breeds, 20,580 photos) with its official train/test split.

    Example: clearclass download stanford-dogs --out data

    Resumes a partial download, checks the published sizes, and writes labels.csv
    (path,label,is_valid: 12,000 training and 8,580 test photos) for `clearclass train`.
    """
    _public_dataset("stanford-dogs", "full", out, keep_archives, timeout, retries, quiet)


@app.command()
def search(
    queries: Annotated[list[str] | None, typer.Argument(
        help="What to search for, one class each (its folder is a slug of it).",
        show_default=False, metavar="QUERY...")] = None,
    provider: Annotated[str, typer.Option(
        help="duckduckgo (no key), pexels, unsplash, pixabay, flickr or serpapi (keys in "
             "PEXELS_API_KEY, UNSPLASH_ACCESS_KEY, PIXABAY_API_KEY, FLICKR_API_KEY, "
             "SERPAPI_API_KEY).")] = "duckduckgo",
    per_class: Annotated[int, typer.Option(help="Good, distinct photos wanted per class.")] =
        100,
    out: Annotated[Path, typer.Option(help="Folder for the dataset (one folder per class).")] =
        Path("photos"),
    classes: Annotated[Path | None, typer.Option(
        help="A text file with one class (search query) per line, instead of or besides "
             "QUERY.")] = None,
    max_side: Annotated[int | None, typer.Option(
        help="Resize photos whose long side is larger than this many pixels on save.")] =
        None,
    min_side: Annotated[int, typer.Option(
        help="Keep only photos whose short side is at least this many pixels.")] = 64,
    workers: Annotated[int, typer.Option(help="Parallel downloads.")] = 8,
    timeout: Timeout = 30.0,
    retries: Retries = 3,
    quiet: Quiet = False,
) -> None:
    """Search the web for photos of each class and save the good, distinct ones.

    Example: clearclass search "beagle" "pug" --provider pexels --per-class 50 --out dogs

    Keeps photos that decode and are big enough, drops exact and near duplicates, reports
    a photo found under two classes, and writes DIR/manifest.csv (file, class, source
    URL, provider, author, licence) so attribution can be honoured. Run it again to top up.
    """
    from clearclass.acquire import search as run

    with _output(quiet):
        run(queries or [], provider=provider, per_class=per_class, out=out,
            classes_file=classes, max_side=max_side, min_side=min_side, workers=workers,
            timeout=timeout, retries=retries)


@app.command()
def verify(
    folder: Annotated[Path, typer.Argument(help="A folder of class folders.",
                                           show_default=False, metavar="DIR")],
    delete: Annotated[bool, typer.Option(help="Delete the files found bad.")] = False,
    move_to: Annotated[Path | None, typer.Option(
        help="Move the files found bad into this folder, keeping their class folder.")] =
        None,
    fix_extensions: Annotated[bool, typer.Option(
        help="Rename files whose extension does not match their content (a PNG named "
             ".jpg).")] = False,
    min_side: Annotated[int, typer.Option(
        help="Photos with a shorter short side, in pixels, are reported as too small.")] = 64,
    quiet: Quiet = False,
) -> None:
    """Check a dataset: unreadable or truncated files, wrong extensions, tiny photos, duplicates.

    Example: clearclass verify photos/ --move-to rejected/

    fastai's verify_images, but it says what it found: a table of every problem, with
    duplicates within and across classes. Nothing changes unless --delete, --move-to
    or --fix-extensions.
    """
    from clearclass.acquire import verify as run

    with _output(quiet):
        report = run(folder, delete=delete, move_to=move_to, fix_extensions=fix_extensions,
                     min_side=min_side)
    if quiet and not report.ok:  # the problems are the result: shown even with --quiet
        progress.console.print(report.to_table())


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's run.")] =
        Path("clearclass-demo"),
    quiet: Quiet = False,
) -> None:
    """Run the whole workflow offline on the bundled sample of dog photos.

    Example: clearclass demo

    Explores the sample, fine-tunes efficientnet_lite0 (one frozen and one unfrozen
    epoch), evaluates it, exports it to ONNX and predicts a few photos. A few minutes on
    two CPU cores.
    """
    from clearclass.demo import run_demo

    with _output(quiet):
        run_demo(out)


def main() -> None:
    """Entry point of the `clearclass` command."""
    fileio.printable_streams()  # a file name that is not UTF-8 is printed escaped, \xe9
    try:
        app()
    except ClearclassError as e:
        if _state["debug"]:
            raise
        progress.err_console.print(f"[bold red]error:[/bold red] {_escape(_message(e))}")
        sys.exit(1)
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        sys.exit(130)
    except OSError as e:
        # A full disk, a folder without write permission, a file that vanished: the
        # system's own words and the path, not a traceback. What was being written is
        # left whole (fileio writes beside the target, then renames).
        if _state["debug"]:
            raise
        progress.err_console.print(f"[bold red]error:[/bold red] {_escape(_message(e))}")
        sys.exit(1)


def _message(e: Exception) -> str:
    """The one line an error is reported as."""
    if isinstance(e, OSError):  # the system's own words and the path
        return (e.strerror or str(e)) + (f": {e.filename}" if e.filename else "")
    # A bad setting is named as the user typed it on the command line.
    return e.as_option() if isinstance(e, SettingError) else str(e)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


if __name__ == "__main__":
    main()
