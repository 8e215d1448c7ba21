"""`advise(RUN)`: what to fix in the data next, class by class, in plain words.

One table, a row per class: its photos, the run's accuracy on it, the class it is most
confused with, the photos `clean` finds there (likely mislabelled, unlike any class,
duplicated), and how many photos the learning curve says it needs for the target accuracy.
Then the three things most worth doing next, ordered by the accuracy they put at stake on
the validation photos (`_next_steps` says how each is weighed). It writes RUN/advice/
(classes.csv and index.html) and shows itself in a notebook.

Everything is computed from the kept features (`features.py`: one pass over the photos,
reused), so a second call takes seconds.

A multi-label run gets a row per label, and F1 where a single-label run has accuracy (a
label found on most of its photos but given to many others is not "accurate"): the run's
micro F1 at its thresholds, each label's F1, the label most often predicted instead where
it is missed, the photos whose labels `clean` disputes counted under each disputed label,
the photos each label needs for the target F1 (`learning_curve`'s multi-label curves), and
rare labels against the others (--balance does not apply to several labels per photo).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clearclass import fileio
from clearclass.advice.out_of_sample import DEFAULT_FOLDS
from clearclass.progress import say

if TYPE_CHECKING:
    from clearclass.advice.features import RunFeatures
    from clearclass.advice.learning_curve import PhotosAdvice, PhotosNeeded
    from clearclass.cleaning import Cleaning

ADVICE_FOLDER = "advice"
CLASSES_FILE, PAGE_FILE, CURVES_FILE = "classes.csv", "index.html", "learning_curves.png"
NEXT_STEPS = 3  # the things most worth doing next, as the issue asks
TABLE_ROWS = 20  # rows the command prints; classes.csv and the page hold them all
# Checking a flagged photo takes seconds where adding one takes a search, a download and a
# label: at equal accuracy at stake, fixing the photos there are comes first.
EASY_FIX = 2.0
COLUMNS = ("class", "class_id", "train_photos", "valid_photos", "accuracy",
           "most_confused_with", "confused_share", "likely_mislabelled", "unlike_any_class",
           "duplicates", "photos_needed", "more_photos_needed", "more_photos_low",
           "more_photos_high", "photos_needed_note")
# A multi-label run's classes.csv: a row per label, its F1 where the above has accuracy.
MULTI_LABEL_COLUMNS = ("label", "label_id", "train_photos", "valid_photos", "f1",
                       "most_often_predicted_instead", "predicted_instead_share",
                       *COLUMNS[7:])


@dataclass(frozen=True)
class ClassAdvice:
    """One class's row of the advice table (a multi-label run's: one label's)."""

    class_id: str
    name: str
    train_photos: int  # multi-label: training photos with the label; so valid_photos
    valid_photos: int
    # The run's accuracy on its validation photos (multi-label: the label's F1 there, at
    # its threshold); None: it has none.
    accuracy: float | None
    # The class its validation photos are most often taken for, or "" (multi-label: the
    # label most often predicted, wrongly, on its photos where it is missed).
    confused_with: str
    confused_share: float  # the share of its validation photos taken for that class
    # Photos labelled with this class that the heads confidently put elsewhere (multi-label:
    # photos where they confidently dispute this label, given or not).
    mislabelled: int
    outliers: int  # photos labelled with this class that look unlike any class
    duplicates: int  # copies (files or what the model sees) labelled with this class
    needed: PhotosNeeded | None = None  # the learning curve's answer for the target

    @property
    def needed_text(self) -> str:
        """Photos to add for the target, in words: '+120 (+80 to +200)', 'reached', or
        'not enough data to say' (the reason is in `needed.reason`)."""
        from clearclass.advice.learning_curve import NOT_ENOUGH

        n = self.needed
        if n is None:
            return ""
        if n.more is None:
            return NOT_ENOUGH
        if n.more == 0:
            return "reached"
        return f"+{n.more:,} (+{n.low - n.photos_now:,} to +{n.high - n.photos_now:,})"


@dataclass(repr=False)
class Advice:
    """What `advise` found: `classes` (one `ClassAdvice` per class, in the model's order),
    `next_steps` (plain sentences, most worth doing first) and the files written.

    Example:
        advice = clearclass.advise("runs/dogs")
        print(advice.next_steps[0])
        worst = min(advice.classes, key=lambda c: c.accuracy or 0)
    """

    run_dir: Path
    accuracy: float  # the run's accuracy on its validation photos
    target: float  # the accuracy the photos needed are counted for, 0-1
    classes: list[ClassAdvice]
    next_steps: list[str]
    imbalance: str | None = None
    photos: PhotosAdvice | None = None  # the learning curves and the photos they say
    folder: Path | None = None  # RUN/advice, once written
    # "multi": a row per label, F1 for accuracy (`accuracy` is then the micro F1).
    task: str = "single"
    notes: list[str] = dataclasses.field(default_factory=list)  # what could not be said

    @property
    def is_multi_label(self) -> bool:
        return self.task == "multi"

    @property
    def metric(self) -> str:
        """What `accuracy` and `target` measure: "accuracy", or "F1" (multi-label)."""
        return "F1" if self.is_multi_label else "accuracy"

    @property
    def kind(self) -> str:
        """What a row is: "class", or "label" (multi-label)."""
        return "label" if self.is_multi_label else "class"

    @property
    def kinds(self) -> str:
        """`kind`, plural."""
        return "labels" if self.is_multi_label else "classes"

    def headline(self) -> str:
        """The run's accuracy (micro F1) and the target, in one line."""
        measured = "micro F1" if self.is_multi_label else "accuracy"
        return (f"{measured} {self.accuracy:.1%} on the validation photos; photos needed "
                f"are counted for {self.metric} {self.target:.1%}.")

    def summary(self) -> str:
        lines = [f"{self.run_dir}: {self.headline()}"]
        if self.imbalance:
            lines.append(self.imbalance)
        lines += self.notes
        lines.append("Most worth doing next:" if self.next_steps else
                     f"Nothing stands out: the photos look clean and every {self.kind} is near "
                     "the target.")
        lines += [f"  {i}. {step}" for i, step in enumerate(self.next_steps, start=1)]
        if self.folder is not None:
            lines.append(f"Per {self.kind}: {self.folder / CLASSES_FILE}")
            lines.append(f"With the learning curves: {self.folder / PAGE_FILE}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def to_table(self, limit: int = TABLE_ROWS):
        """The classes as a rich table, lowest accuracy first (what the command prints)."""
        from rich import box
        from rich.table import Table

        shown = _worst_first(self.classes)[:limit]
        title = f"{self.kinds.capitalize()}, lowest {self.metric} first"
        if len(shown) < len(self.classes):
            title += f" ({len(shown)} of {len(self.classes)})"
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
        confused = "predicted instead" if self.is_multi_label else "most confused with"
        photos = "photos with it" if self.is_multi_label else "photos"
        for column, justify in ((self.kind, "left"), (f"{photos}\ntrain/valid", "right"),
                                (self.metric, "right"), (confused, "left"),
                                ("found by clean", "left"),
                                (f"photos to add\nfor {self.target:.0%}", "left")):
            table.add_column(column, justify=justify, overflow="fold")
        for row in shown:
            name, photos, accuracy, confused, mislabelled, outliers, duplicates, needed = \
                _cells(row)
            found = ", ".join(f"{n} {what}" for n, what in (
                (row.mislabelled, "mislabelled"), (row.outliers, "unlike any class"),
                (row.duplicates, "duplicated")) if n)
            table.add_row(*map(fileio.shown_name, (name, photos, accuracy, confused, found,
                                                    needed)))
        return table

    def _repr_html_(self) -> str:
        from clearclass import pages

        return pages.render("advice_summary.html", advice=self, rows=_page_rows(self))


def advise(run: object, target: float | None = None, folds: int = DEFAULT_FOLDS,
           device: str = "auto") -> Advice:
    """Advise what to fix in a run's photos next: a row per class and three next steps.

    `target` is the accuracy (0-1) to count photos needed for; by default the run's
    accuracy plus 5 points, at most 0.99. `folds`: how many heads judge the labels, each
    photo by one that never saw it (as `clean`). Writes RUN/advice/classes.csv and
    RUN/advice/index.html.

    Example:
        advice = clearclass.advise("runs/dogs", target=0.9)
        print(advice.summary())
    """
    from clearclass.advice.features import run_features
    from clearclass.advice.learning_curve import (
        check_target,
        default_target,
        learning_curves,
        photos_advice,
    )
    from clearclass.advice.out_of_sample import require_libraries
    from clearclass.errors import SettingError, check_count
    from clearclass.run_folder import RunFolder
    from clearclass.task import f1_scores

    require_libraries("advise")  # before the features pass, not after it
    folder = RunFolder.open(run, needs_model=True)
    if target is not None:
        target = check_target(target)
    check_count("folds", folds, least=2)
    found = run_features(folder.path, device=device)
    info = folder.model_info()
    names = dict(zip(info.class_ids, info.class_names))
    valid = found.is_valid
    decided = None
    if found.is_multi_label:  # each label at its threshold, as the model decides
        decided = info.decision().decide(found.probabilities)
        accuracy = (f1_scores(decided[valid], found.targets[valid])[1] if valid.any()
                    else math.nan)
    else:
        accuracy = (float((found.probabilities[valid].argmax(1) == found.targets[valid]).mean())
                    if valid.any() else math.nan)
    target = default_target(accuracy) if target is None else target
    cleaning = _problems(folder.path, device, folds)
    rows = (_rows(found, names, cleaning) if decided is None
            else _label_rows(found, names, cleaning, decided))
    notes: list[str] = []
    try:
        curves = learning_curves(found)
    except SettingError as e:  # multi-label: no label varies among the training photos
        curves = None
        notes.append(f"No learning curves, so no photos needed: the run {e.problem}")
    photos = None if curves is None else photos_advice(
        curves, target, [r.accuracy for r in rows], [r.name for r in rows])
    if photos is not None:
        rows = [dataclasses.replace(r, needed=n) for r, n in zip(rows, photos.per_class)]
    imbalance = (_label_imbalance(rows, int((~valid).sum())) if found.is_multi_label
                 else _imbalance(rows))
    advice = Advice(folder.path, accuracy, target, rows, [], imbalance, photos,
                    task=found.task, notes=notes)
    advice.next_steps = _next_steps(advice, cleaning)
    advice.folder = _write(advice)
    return advice


def _problems(run_dir: Path, device: str, folds: int) -> Cleaning:
    """What `clean` finds in the run's photos, without writing RUN/clean/."""
    from clearclass import cleaning

    return cleaning.find(run_dir, device=device, folds=folds)


def _rows(found: RunFeatures, names: dict[str, str], cleaning: Cleaning) -> list[ClassAdvice]:
    """A row per class, in the model's order, without the photos needed yet."""
    classes = len(found.class_ids)
    valid = found.is_valid
    predicted = found.probabilities.argmax(1)
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (found.targets[valid], predicted[valid]), 1)
    train_counts = np.bincount(found.targets[~valid], minlength=classes)
    # A photo counts as mislabelled where clean suggests relabelling it: the heads that never
    # saw it are confident of another class (cleaning.RELABEL_CONFIDENCE and how it was
    # measured). The other photos clean lists as likely mislabelled are every disagreement
    # of the heads (10% of imagewoof-2k, where few labels are wrong): to look at, not to
    # count.
    counted = _counted(cleaning)
    rows = []
    for i, class_id in enumerate(found.class_ids):
        support = int(matrix[i].sum())
        mistakes = matrix[i].copy()
        mistakes[i] = 0
        worst = int(mistakes.argmax())
        rows.append(ClassAdvice(
            class_id, names.get(class_id, class_id), int(train_counts[i]), support,
            float(matrix[i, i] / support) if support else None,
            names.get(found.class_ids[worst], found.class_ids[worst]) if mistakes[worst] else "",
            float(mistakes[worst] / support) if support and mistakes[worst] else 0.0,
            counted[class_id, "mislabelled"], counted[class_id, "outliers"],
            counted[class_id, "duplicates"]))
    return rows


def _counted(cleaning: Cleaning) -> Counter:
    """(class id, "duplicates" / "mislabelled" / "outliers") -> photos `clean` found: each
    under its class; a multi-label photo under each of its labels, and a likely mislabelled
    one under each label the heads dispute (added or removed)."""
    from clearclass import cleaning as cleaning_module

    counted: Counter = Counter()
    duplicates = {id(f) for f in cleaning.duplicates}
    for finding in cleaning.findings:
        labels = (finding.class_id,) if finding.labels is None else finding.labels
        if id(finding) in duplicates:
            counted.update((c, "duplicates") for c in labels)
        elif finding.problem == cleaning_module.MISLABELLED and \
                finding.action == cleaning_module.RELABEL:
            if finding.new_labels is not None:
                labels = tuple(set(finding.labels or ()) ^ set(finding.new_labels))
            counted.update((c, "mislabelled") for c in labels)
        elif finding.problem == cleaning_module.OUTLIER:
            counted.update((c, "outliers") for c in labels)
    return counted


def _label_rows(found: RunFeatures, names: dict[str, str], cleaning: Cleaning,
                decided: np.ndarray) -> list[ClassAdvice]:
    """Multi-label: a row per label, in the model's order, from the model's decisions
    (`decided`: photos x labels, at its thresholds), without the photos needed yet."""
    from clearclass.task import f1_scores

    valid = found.is_valid
    targets, decided = found.targets.astype(bool), np.asarray(decided, dtype=bool)
    per_label, _ = f1_scores(decided[valid], targets[valid])
    counted = _counted(cleaning)
    rows = []
    for i, class_id in enumerate(found.class_ids):
        has = valid & targets[:, i]
        support = int(has.sum())
        # Where the label is missed: the labels predicted there that the photo lacks.
        missed = has & ~decided[:, i]
        instead = (decided[missed] & ~targets[missed]).sum(axis=0)
        worst = int(instead.argmax()) if len(instead) else 0
        confused = int(instead[worst]) if len(instead) else 0
        rows.append(ClassAdvice(
            class_id, names.get(class_id, class_id), int((~valid & targets[:, i]).sum()),
            support, float(per_label[i]) if support else None,
            names.get(found.class_ids[worst], found.class_ids[worst]) if confused else "",
            confused / support if confused else 0.0,
            counted[class_id, "mislabelled"], counted[class_id, "outliers"],
            counted[class_id, "duplicates"]))
    return rows


def _imbalance(rows: list[ClassAdvice]) -> str | None:
    from clearclass.data.checks import imbalance_warning

    return imbalance_warning({r.name: r.train_photos for r in rows})


def _label_imbalance(rows: list[ClassAdvice], train_photos: int) -> str | None:
    from clearclass.data.checks import label_imbalance_warning

    return label_imbalance_warning({r.name: r.train_photos for r in rows}, train_photos)


def _next_steps(advice: Advice, cleaning: Cleaning) -> list[str]:
    """The NEXT_STEPS things most worth doing, each weighed by the share of the validation
    accuracy it puts at stake, so that unlike things compare:
    - validation photos that copy training photos: their share of the validation photos
      (the accuracy is inflated by up to that much);
    - likely mislabelled and unlike-any-class photos: their share of all photos (a wrong
      label in validation counts a right answer wrong; in training it teaches the mistake),
      times EASY_FIX;
    - more photos of a class: (target - its accuracy) x its share of the validation photos,
      what the overall accuracy gains when the class reaches the target;
    - imbalance: the same gain summed over the classes with under a third of the largest
      class's photos that are below the run's accuracy.
    Multi-label: F1 for accuracy, and a label's share of the validation photos' labels
    (what the micro F1 weighs) for a class's share of the photos.
    """
    from clearclass import cleaning as cleaning_module

    run = str(advice.run_dir)
    rows, multi = advice.classes, advice.is_multi_label
    valid_total = max(sum(r.valid_photos for r in rows), 1)
    photos_total = max(sum(r.train_photos + r.valid_photos for r in rows), 1)
    valid_photos = valid_total
    if multi:  # a photo counts under each of its labels in the rows: count photos here
        valid_photos = max(cleaning.checked.get("valid", 0), 1)
        photos_total = max(sum(cleaning.checked.values()), 1)
    of = "with" if multi else "of"
    steps: list[tuple[float, str]] = []

    across = [f for f in cleaning.findings if f.problem == cleaning_module.ACROSS_SPLITS]
    if across:
        steps.append((len(across) / valid_photos,
                      f"Remove the {_count(len(across), 'validation photo')} that copy "
                      f"training photos: the {advice.metric} counts photos the model trained "
                      f"on. They are listed first by: clearclass clean {run}"))
    mislabelled = [r for r in rows if r.mislabelled]
    if mislabelled:
        total = (sum(f.problem == cleaning_module.MISLABELLED and
                     f.action == cleaning_module.RELABEL for f in cleaning.findings)
                 if multi else sum(r.mislabelled for r in rows))
        most = max(mislabelled, key=lambda r: r.mislabelled)
        steps.append((EASY_FIX * total / photos_total, (
            f"Check the {_count(total, 'photo')} whose labels look wrong "
            f"({most.mislabelled} about {most.name}): heads that never saw them dispute a "
            f"label. clearclass clean {run} lists them first, with the labels they look "
            f"like, to relabel or delete.") if multi else (
            f"Check the {_count(total, 'photo')} that look mislabelled "
            f"({most.mislabelled} labelled {most.name}): heads that never saw them "
            f"put them in another class. clearclass clean {run} lists them first, "
            f"with the class they look like, to relabel or delete.")))
    outliers = (sum(f.problem == cleaning_module.OUTLIER for f in cleaning.findings)
                if multi else sum(r.outliers for r in rows))
    if outliers:
        steps.append((EASY_FIX * outliers / photos_total,
                      f"Look at the {_count(outliers, 'photo')} unlike any "
                      f"{'other' if multi else 'class'} (another kind of picture, blank or "
                      f"damaged): clearclass clean {run} lists them; delete those that do "
                      f"not belong."))
    for r in rows:
        if r.accuracy is None or r.accuracy >= advice.target:
            continue
        gain = (advice.target - r.accuracy) * r.valid_photos / valid_total
        confused = ""
        if r.confused_with and multi:
            confused = (f"; where it is missed, {r.confused_with} is predicted instead (on "
                        f"{r.confused_share:.0%} of its photos)")
        elif r.confused_with:
            confused = (f"; it is confused with {r.confused_with} {r.confused_share:.0%} of "
                        "the time")
        its = "its F1" if multi else "it"
        n = r.needed
        if n is not None and n.more:
            what = (f"Add about {n.more:,} photos {of} {r.name} (between "
                    f"{n.low - n.photos_now:,} and {n.high - n.photos_now:,}; "
                    f"{n.photos_needed:,} in all) to bring {its} from {r.accuracy:.0%} to "
                    f"{advice.target:.0%}{confused}.")
        else:
            # The curve cannot count them, or its heads already reach the target where the
            # network does not: photos may help, but no number is honest.
            why = (n.reason if n is not None and n.reason else
                   "its learning curve is at the target already, the network is not")
            what = (f"Add photos {of} {r.name}: {its} is at {r.accuracy:.0%}{confused}. How "
                    f"many for {advice.target:.0%}: {_not_enough(why)}.")
        steps.append((gain, what))
    if advice.imbalance:
        largest = max(r.train_photos for r in rows)
        small = [r for r in rows if r.train_photos * 3 < largest and r.accuracy is not None
                 and r.accuracy < advice.accuracy]
        if small:
            gain = sum((advice.accuracy - r.accuracy) * r.valid_photos for r in small)
            names = ", ".join(r.name for r in small[:3])
            are = "are" if len(small) > 1 else "is"
            steps.append((gain / valid_total, (
                f"Add photos with the rare label{'s' if len(small) > 1 else ''} {names}: "
                f"{'they' if len(small) > 1 else 'it'} {are} on under a third of the photos "
                f"of the most common label and below the average F1 (--balance is for one "
                f"class per photo).") if multi else (
                f"Train again with --balance weights (or --balance sampler): {names} "
                f"{'have' if len(small) > 1 else 'has'} under a third of the photos of the "
                f"largest class and {are} below the average.")))
    steps.sort(key=lambda s: -s[0])
    return [text for score, text in steps[:NEXT_STEPS] if score > 0]


def _not_enough(why: str) -> str:
    from clearclass.advice.learning_curve import NOT_ENOUGH

    return why if why.startswith(NOT_ENOUGH) else f"{NOT_ENOUGH} ({why})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _worst_first(rows: list[ClassAdvice]) -> list[ClassAdvice]:
    return sorted(rows, key=lambda r: (math.inf if r.accuracy is None else r.accuracy, r.name))


def _cells(row: ClassAdvice) -> tuple[str, ...]:
    confused = (f"{row.confused_with} {row.confused_share:.0%}" if row.confused_with
                else "")
    return (row.name, f"{row.train_photos}/{row.valid_photos}",
            "no valid photos" if row.accuracy is None else f"{row.accuracy:.0%}", confused,
            str(row.mislabelled), str(row.outliers), str(row.duplicates), row.needed_text)


def _page_rows(advice: Advice) -> list[dict]:
    return [dict(zip(("name", "photos", "accuracy", "confused", "mislabelled", "outliers",
                      "duplicates", "needed"), _cells(r)))
            for r in _worst_first(advice.classes)]


def _write(advice: Advice) -> Path:
    from clearclass import pages
    from clearclass.figures import png_bytes

    folder = advice.run_dir / ADVICE_FOLDER
    columns = MULTI_LABEL_COLUMNS if advice.is_multi_label else COLUMNS
    rows = []
    for r in advice.classes:
        n = r.needed
        known = n is not None and n.more is not None
        rows.append((r.name, r.class_id, r.train_photos, r.valid_photos,
                     "" if r.accuracy is None else f"{r.accuracy:.4f}", r.confused_with,
                     f"{r.confused_share:.4f}" if r.confused_with else "", r.mislabelled,
                     r.outliers, r.duplicates,
                     n.photos_needed if known else "", n.more if known else "",
                     n.low - n.photos_now if known else "",
                     n.high - n.photos_now if known else "",
                     "" if n is None else n.reason))
    fileio.write_csv(folder / CLASSES_FILE, columns, rows)
    curves_uri = ""
    if advice.photos is not None:
        data = png_bytes(advice.photos.figure())
        fileio.write_bytes(folder / CURVES_FILE, data)
        curves_uri = pages.png_uri(data)
    fileio.write_text(folder / PAGE_FILE, pages.render(
        "advice_page.html", advice=advice, rows=_page_rows(advice), curves=curves_uri))
    say(f"Advice written to {folder}")
    return folder
