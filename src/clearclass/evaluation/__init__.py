"""Evaluation of a trained run: what it gets right, what it confuses, where it fails most.

`evaluate(RUN)` predicts every validation photo once (or every photo of another labelled
folder, `data=`) and derives everything from those probabilities: accuracy, top-5 accuracy,
accuracy with test-time augmentation, calibration, the confusion matrix with the classes
confused with each other side by side, the most confused pairs (with a heatmap of just the
classes in them), precision, recall and F1 per class, and the photos with the highest loss.
It writes them to `RUN/report/` with a self-contained, interactive `index.html`, and returns
an `Evaluation` whose `plot_*` methods draw the same figures (under the cell, in a notebook).

A multi-label model (several labels per photo, maybe none) has no one predicted class to
confuse: its evaluation is a `MultiLabelEvaluation` (multi_label.py), with the same verbs
(`summary`, `facts`, `headline`, `per_class`, `most_confused`, `top_losses`, `plot_*`) and
its own figures: per label at its threshold, labels given in place of others,
precision-recall curves, top losses with the labels given beside the true ones.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clearclass.bundle import sha256
from clearclass.data.sources import Photo, display_name, list_photos
from clearclass.errors import (
    DataError,
    RunError,
    SettingError,
    check_count,
    check_path,
    described,
)
from clearclass.evaluation.multi_label import LabelConfusion, MultiLabelEvaluation
from clearclass.evaluation.report import REPORT_FILES, write_report
from clearclass.evaluation.results import (
    MOST_CONFUSED_PAIRS,
    TOP_LOSSES,
    Calibration,
    CalibrationBin,
    ConfusedPair,
    Evaluation,
    confusion_order,
)
from clearclass.predict import Classifier, load
from clearclass.progress import bar, say, warn
from clearclass.run_folder import RunFolder, run_path
from clearclass.training.config import LABEL_DELIMITER_RULE, is_label_delimiter

if TYPE_CHECKING:
    from clearclass.training.loop import TrainingRun

__all__ = ["MOST_CONFUSED_PAIRS", "REPORT_FILES", "TOP_LOSSES", "Calibration",
           "CalibrationBin", "ConfusedPair", "Evaluation", "LabelConfusion",
           "MultiLabelEvaluation", "confusion_order", "evaluate", "predict_photos",
           "write_report"]
BATCH = 32
# What a photo's truth is: its class id, or (a multi-label model's photo) its set of labels.
Truth = str | tuple[str, ...]


def evaluate(run: str | Path | TrainingRun, data: str | Path | None = None, tta: bool = False,
             top_losses: int = TOP_LOSSES, device: str = "auto",
             report: str | Path | None = None, exclude_training: bool = False,
             label_delimiter: str | None = None) -> Evaluation | MultiLabelEvaluation:
    """Evaluate a training run and write its report.

    By default on the run's own validation photos, into RUN/report/. With `data`, on the
    photos of another labelled folder (or CSV) instead, such as a held-out test split, into
    RUN/report-<name of data's folder>/: any of the model's classes, with any number of
    photos each; its classes are matched to the model's by id (folder name or CSV label),
    then by display name, and those that match neither are named and left out. Photos the
    run trained on (the same file, or a copy of its bytes) are counted in a warning;
    `exclude_training` leaves them out.
    `tta`: also predict each photo's mirror image and report the accuracy of the two averaged.
    `report`: another folder for the report.

    A multi-label run gives a `MultiLabelEvaluation` (at the thresholds of its model.json),
    and `data` is read as multi-label: a CSV's label cells are sets of labels (split on
    `label_delimiter`, one character; by default as the run's --label-delimiter says, else
    on ';', or on spaces when no cell has one); labels the model does not know are left out
    of each photo's set, with a warning that names them.

    Example:
        report = clearclass.evaluate("runs/dogs", tta=True)
        print(report.summary())
    """
    _check_arguments(run=run, data=data, tta=tta, top_losses=top_losses, device=device,
                     report=report, exclude_training=exclude_training,
                     label_delimiter=label_delimiter)
    run_folder = RunFolder.open(run, needs_model=True)
    run_dir = run_folder.path
    classifier = load(run_folder.model_dir, device=device)
    class_ids = list(classifier.info.class_ids)
    task = classifier.info.task
    if label_delimiter is not None and task != "multi":
        raise SettingError("label_delimiter", f"is for multi-label runs; {run_dir} gives one "
                                              "class per photo, whose label cell is read whole.")
    split = run_folder.split(class_ids)  # checked against config.json's record
    for note in split.notes:
        say(note)
    if data is None:
        photos: list[tuple[Path, Truth]] = [
            (p.path, p.label_set if task == "multi" else p.class_id) for p in split.valid]
        if not photos:
            raise RunError(f"{run_folder.split_file} lists no validation photos.")
        source, folder = "validation photos", run_dir / "report"
    else:
        delimiter = None if task != "multi" else (
            label_delimiter if label_delimiter is not None else _label_delimiter(run_folder))
        photos = labelled_photos(data, class_ids, task, delimiter)
        where = Path(data).expanduser().resolve()
        # A labels file is named for its folder: data/stanford-dogs/labels.csv, stanford-dogs.
        name = re.sub(r"[^\w.-]+", "-", where.name if where.is_dir() else where.parent.name)
        source, folder = f"photos of {data}", run_dir / f"report-{name}"
    photos = _without_training_photos(photos, split.train, source, run_dir, exclude_training)
    evaluation = predict_photos(classifier, photos, tta=tta, source=source)
    # The learning curves and photos needed are counted per class: single-label only.
    learning = (_learning_curves(run_folder, evaluation)
                if data is None and isinstance(evaluation, Evaluation) else None)
    evaluation.report_dir = write_report(evaluation, Path(report) if report else folder,
                                         top_losses, learning=learning)
    _track(run_folder, evaluation)
    return evaluation


def _label_delimiter(run_folder: RunFolder) -> str | None:
    """What separates the labels in the run's labels CSV (`train --label-delimiter`), for
    reading a test CSV alike; None (the default rule) when the run does not say."""
    try:
        return run_folder.config().label_delimiter
    except RunError:
        return None


def _track(run_folder: RunFolder, evaluation: Evaluation | MultiLabelEvaluation) -> None:
    """The report to the trackers the run was trained with (`train --track`)."""
    try:
        config = run_folder.config()
        if not config.track:
            return
        epochs = len(run_folder.history())
    except RunError:  # nothing says where to send it; the report is written all the same
        return
    from clearclass.tracking import track_evaluation

    track_evaluation(run_folder.path, config.track, evaluation, evaluation.report_dir, epochs)


def _learning_curves(run_folder: RunFolder, evaluation: Evaluation) -> object:
    """The run's learning curves and photos needed (`advice.learning_curve.photos_advice`)
    from the features RUN/advice/ keeps; else the sentence the report shows instead.
    Computing the features is a forward pass over every training photo too, which would
    make evaluate several times slower: that is the job of the advice, not of evaluate."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return ("Learning curves and the photos each class needs come with the advice "
                "extra: pip install 'clearclass[advice]'.")
    from clearclass.advice.features import kept_features
    from clearclass.advice.learning_curve import learning_curves, photos_advice

    found = kept_features(run_folder.path)
    if found is None:
        return ("Learning curves and the photos each class needs are drawn from the "
                "network's features of every photo of the run: compute them with "
                "clearclass.advice.features.run_features(RUN) (clearclass advise RUN), then "
                "evaluate again.")
    # Photos needed are counted from this network's accuracy on each class, as advise does.
    predictions = evaluation.predictions
    network = [float((predictions[evaluation.targets == c] == c).mean())
               if (evaluation.targets == c).any() else None
               for c in range(len(evaluation.class_ids))]
    return photos_advice(learning_curves(found), network_accuracy=network,
                         names=evaluation.class_names)


def labelled_photos(data: str | Path, class_ids: list[str], task: str = "single",
                    label_delimiter: str | None = None) -> list[tuple[Path, Truth]]:
    """The test photos of a labelled folder or CSV, with the model's class id for its label
    (a multi-label model's: the set of its labels the photo has).

    The test photos are the held-out ones when the data says which (a valid/ or test/ folder
    beside train/, or an is_valid column, as Stanford Dogs' labels.csv marks its official
    test list), else every photo. A test set is not a training set: one class, or one photo
    of a class, is enough (`list_photos` reads it, without training's rules). Labels match
    a class by id first, then by display name ("Chihuahua" for "n02085620-Chihuahua", any
    case), then by WordNet id (Imagewoof's "n02085620"); photos of labels that match no class
    are left out with a warning that names them. An error when none match.

    With `task` "multi", a CSV's label cells are read as sets of labels (`list_photos`), and
    a label that matches none of the model's is left out of each photo's set, not the photo:
    the model's labels are decided on it all the same (a photo with no other label counts
    as having none of them). A warning names those labels.
    """
    found = list_photos(data, task, label_delimiter)
    for note in found.notes:
        say(note)
    photos = found.valid if found.split_given else found.photos
    if found.split_given:
        if not photos:
            raise DataError(
                f"{data} marks none of its {len(found.photos)} photos as held out "
                f"({found.layout}), so there is nothing to evaluate. Mark the test photos "
                "(is_valid True), or remove the is_valid column to evaluate on every photo.")
        say(f"Evaluating on the {len(photos)} held-out photos of {data} ({found.layout}).")
    if task == "multi":
        return _multi_label_photos(data, photos, class_ids)
    given = sorted({p.class_id for p in photos})
    matched = _matched_classes(given, class_ids)
    if not matched:
        raise DataError(f"None of the {len(given)} classes of {data} is a class of this model "
                        f"(e.g. {', '.join(given[:3])}; the model's: {', '.join(class_ids[:3])}"
                        "...). Name the class folders (or CSV labels) as in the training data.")
    unmatched = Counter(p.class_id for p in photos if p.class_id not in matched)
    if unmatched:
        warn(f"{len(unmatched)} class(es) of {data} are not classes of this model and were "
             "left out: " + ", ".join(f"{c} ({n} photos)" for c, n in
                                      sorted(unmatched.items())[:8])
             + ("..." if len(unmatched) > 8 else ""))
    absent = [c for c in class_ids if c not in set(matched.values())]
    if absent:
        say(f"{len(absent)} class(es) of the model have no photo in {data}: "
            + ", ".join(absent[:8]) + ("..." if len(absent) > 8 else ""))
    return [(p.path, matched[p.class_id]) for p in photos if p.class_id in matched]


def _matched_classes(given: list[str], class_ids: list[str]) -> dict[str, str]:
    """Each of the `given` labels that names one of the model's classes, with that class's
    id: by id, then display name (any case), then WordNet id."""
    by_name: dict[str, str] = {}
    for cid in class_ids:
        by_name.setdefault(display_name(cid).casefold(), cid)
        if _wordnet_id(cid):
            by_name.setdefault(_wordnet_id(cid), cid)
    known = set(class_ids)
    matched: dict[str, str] = {}
    for class_id in given:
        if class_id in known:
            matched[class_id] = class_id
        elif display_name(class_id).casefold() in by_name:
            matched[class_id] = by_name[display_name(class_id).casefold()]
        elif _wordnet_id(class_id) and _wordnet_id(class_id) in by_name:  # n02086240, n02086240-Pug
            matched[class_id] = by_name[_wordnet_id(class_id)]
    return matched


def _multi_label_photos(data: str | Path, photos: list[Photo],
                        class_ids: list[str]) -> list[tuple[Path, Truth]]:
    """Each photo with the set of the model's labels it has (`labelled_photos`)."""
    given = sorted({c for p in photos for c in p.label_set})
    if not given:
        raise DataError(f"No photo of {data} has a label, so there is nothing to measure. "
                        "List each photo's labels in the CSV's label column (dog;cat).")
    matched = _matched_classes(given, class_ids)
    if not matched:
        raise DataError(f"None of the {len(given)} labels of {data} is a label of this model "
                        f"(e.g. {', '.join(given[:3])}; the model's: {', '.join(class_ids[:3])}"
                        "...). Name the labels in the CSV as in the training data.")
    unmatched = Counter(c for p in photos for c in p.label_set if c not in matched)
    if unmatched:
        warn(f"{len(unmatched)} label(s) of {data} are not labels of this model and were "
             "left out of the photos' labels: " + ", ".join(
                 f"{c} ({n} photos)" for c, n in sorted(unmatched.items())[:8])
             + ("..." if len(unmatched) > 8 else "")
             + ". Those photos are evaluated on the model's labels they have (one with no "
               "other label as having none of them).")
    absent = [c for c in class_ids if c not in set(matched.values())]
    if absent:
        say(f"{len(absent)} label(s) of the model are on no photo of {data}: "
            + ", ".join(absent[:8]) + ("..." if len(absent) > 8 else "")
            + " (their recall and average precision are undefined).")
    return [(p.path, tuple(sorted({matched[c] for c in p.label_set if c in matched})))
            for p in photos]


def _without_training_photos(photos: list[tuple[Path, Truth]], training: list[Photo],
                             source: str, run_dir: Path,
                             exclude: bool) -> list[tuple[Path, Truth]]:
    """`photos`, with those the run trained on counted in a warning, or left out (`exclude`).

    A photo counts when it is a training photo of RUN/split.csv (the same file, whatever
    path or link leads to it) or a copy of one's bytes under another name. Bytes, not looks:
    sizes are compared first and only the files of a size a training photo has are read
    (SHA-256), so a test set of new photos costs one stat per file. A re-encoded or resized
    copy is not found: that would mean decoding every training photo, as `clearclass clean`
    does to find near copies (pHash).
    """
    trained = {os.path.realpath(p.path) for p in training}
    by_size: dict[int, list[Path]] = defaultdict(list)
    for p in training:
        try:
            by_size[os.stat(p.path).st_size].append(p.path)
        except OSError:  # gone since training: nothing to compare with
            continue
    digests: dict[int, set[str]] = {}  # of the training photos of a size, read when needed
    seen, copies = [], 0
    for path, _ in photos:
        if os.path.realpath(path) in trained:
            seen.append(path)
            continue
        try:
            size = os.stat(path).st_size
            if size not in by_size:
                continue
            if size not in digests:
                digests[size] = {_digest(p) for p in by_size[size]}
            if sha256(path) in digests[size]:
                seen.append(path)
                copies += 1
        except OSError:  # unreadable: predict_photos says so
            continue
    if not seen:
        return photos
    which = (f"training photos of its split.csv{f', {copies} of them as copies' if copies else ''}"
             f": {', '.join(str(p) for p in seen[:5])}{', ...' if len(seen) > 5 else ''}")
    if not exclude:
        warn(f"{len(seen)} of the {len(photos)} {source} are photos {run_dir} was trained on "
             f"({which}). The accuracy overstates how the model does on photos it has not "
             "seen; --exclude-training leaves them out.")
        return photos
    left = set(seen)
    kept = [(path, class_id) for path, class_id in photos if path not in left]
    if not kept:
        raise DataError(f"All {len(photos)} {source} are photos {run_dir} was trained on "
                        f"({which}), so none is left to evaluate. Evaluate on photos it has "
                        "not seen.")
    say(f"Left out {len(seen)} of the {len(photos)} {source}: {run_dir} was trained on them "
        f"({which}). Evaluating on the other {len(kept)}.")
    return kept


def _digest(path: Path) -> str:
    """A file's SHA-256, or "" when it cannot be read."""
    try:
        return sha256(path)
    except OSError:
        return ""


def _check_arguments(**arguments: object) -> None:
    """Wrong types are one SettingError naming the argument, not a TypeError from deep in."""
    run_path(arguments["run"])
    for name in ("data", "report"):
        if arguments[name] is not None:
            check_path(name, arguments[name], "a path or None")
    for name in ("tta", "exclude_training"):
        if not isinstance(arguments[name], (bool, np.bool_)):
            raise SettingError(name, f"must be True or False; got {described(arguments[name])}.")
    check_count("top_losses", arguments["top_losses"], least=0)
    if not isinstance(arguments["device"], str):
        raise SettingError("device", "must be a device name (auto, cpu, cuda, cuda:N or mps); "
                                     f"got {described(arguments['device'])}.")
    delimiter = arguments["label_delimiter"]
    if not is_label_delimiter(delimiter):  # train's rule, and its words
        raise SettingError("label_delimiter", f"{LABEL_DELIMITER_RULE}; got {delimiter!r}.")
    if delimiter is not None and arguments["data"] is None:
        raise SettingError("label_delimiter", "is for reading the labels CSV given as data "
                                              "(a test set); the run's own validation photos "
                                              "are read from its split.csv. Give data too, "
                                              "or leave it out.")


def _wordnet_id(class_id: str) -> str:
    """The WordNet id a class id starts with (ImageNet, Stanford Dogs, Imagewoof), else ""."""
    found = re.match(r"n\d{8}(?![\d])", class_id)
    return found.group(0) if found else ""


def predict_photos(classifier: Classifier, photos: list[tuple[Path, Truth]], tta: bool = False,
                   source: str = "validation photos") -> Evaluation | MultiLabelEvaluation:
    """Predict each photo once (and its mirror image too, with `tta`).

    Each photo comes with its class id, or for a multi-label model its set of labels (any
    of the model's, maybe none); a multi-label model's evaluation decides at its
    classifier's thresholds. Photos that cannot be read are skipped with a warning.
    """
    info = classifier.info
    index = {c: i for i, c in enumerate(info.class_ids)}
    multi = info.task == "multi"
    kept, targets, probabilities, mirrored, batch, skipped = [], [], [], [], [], []
    with bar(f"predicting {source}", len(photos)) as progress:
        for n, (path, truth) in enumerate(photos):
            try:
                batch.append(classifier.preprocess(path))
                kept.append(path)
                targets.append(_multi_hot(truth, index) if multi else index[truth])
            except DataError as e:
                skipped.append(str(e))  # "PATH: reason."
            if len(batch) == BATCH or (n == len(photos) - 1 and batch):
                pixels = np.stack(batch)
                probabilities.append(classifier.predict_proba_pixels(pixels))
                if tta:  # the mirror image: an augmentation every training run uses
                    flipped = np.ascontiguousarray(pixels[:, :, ::-1])
                    mirrored.append(classifier.predict_proba_pixels(flipped))
                progress.advance(len(batch))
                batch = []
    if skipped:
        warn(f"Skipped {len(skipped)} unreadable photo(s), e.g. {skipped[0]}")
    if not kept:
        raise DataError(f"No photo could be read ({len(photos)} {source}); nothing to "
                        "evaluate.")
    plain = np.concatenate(probabilities)
    averaged = (plain + np.concatenate(mirrored)) / 2 if tta else None
    if multi:
        return MultiLabelEvaluation(list(info.class_ids), list(info.class_names), kept,
                                    np.array(targets), plain, classifier.task.thresholds,
                                    model=info, tta_probabilities=averaged, source=source)
    return Evaluation(list(info.class_ids), list(info.class_names), kept,
                      np.array(targets), plain, model=info,
                      tta_probabilities=averaged, source=source)


def _multi_hot(labels: Truth, index: dict[str, int]) -> np.ndarray:
    row = np.zeros(len(index), dtype=np.int64)
    row[[index[c] for c in labels]] = 1
    return row
