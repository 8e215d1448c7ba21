"""Cleaning the photos a run was trained on: likely mislabelled, unlike any class,
duplicated or unreadable.

`clean(RUN)` computes the trained network's features of every photo of RUN/split.csv once
(`advice.run_features`, kept in RUN/advice/), and from them:
- class probabilities judged out of sample (`advice.out_of_sample`): 5-fold logistic
  regression heads on the features, so that no photo, training or validation, is judged by
  a head that saw it (a class with fewer photos makes fewer folds, and says so);
- likely mislabelled photos: those `cleanlab.filter.find_label_issues` flags on these
  probabilities (`advice.label_issues`, which says which of cleanlab's filters and why),
  least self-confident first; where the heads give the most likely other class at least
  `RELABEL_CONFIDENCE` (or their typical probability for it, when lower), relabelling to it
  is suggested;
- photos unlike any class (a cat among the dogs, a screenshot, a blank frame): far from
  their nearest photos in feature space, by the rule of cleanlab's Datalab
  (`advice.outliers`); deleting them is suggested when the heads do not recognise them as
  their class either;
- identical and near copies: SHA-256 and 64-bit pHash (`acquire.checks`), and pairs that
  look the same to the model (feature near duplicates as Datalab finds them,
  `advice.near_duplicates`, each pair listed once): across train and valid (validation
  would score photos the model trained on), across classes (one photo, two labels: the copy
  whose label the heads find less likely is the one to delete) and within a class;
- files that cannot be read: photos of DATA training skipped, or split photos damaged or
  gone since (they have no features and are listed from the file check alone).
It writes RUN/clean/actions.csv, one row per photo, most likely problem first, with a
suggested action (keep, relabel, delete) and the evidence, for you to edit; and
RUN/clean/index.html, the same rows with thumbnails of each photo and of the photo it
duplicates (or a photo of the suggested class the heads are surest of).

`apply_actions(RUN, CSV)` applies an edited actions.csv to DATA: `delete` moves the file
into RUN/clean/removed/ (nothing is ever deleted), `relabel` moves it into the new class
folder of the same split (or edits the label in a labels CSV, every other byte of it
kept), `keep` does nothing. The whole file is checked before anything changes. Every
change is written to RUN/clean/applied.json before it is made, and `undo(RUN)` reverses
them, newest first, whatever moment an apply was stopped at: DATA is as it was, byte for
byte. A move to another file system is copied, renamed and only then deleted
(`fileio.move_file`), so a stop leaves each photo whole somewhere; undo recognises each
half-done step (its own too) and finishes or reverses it. Ctrl-C stops either between two
changes and says how far it got.

A multi-label run (a labels CSV that gives each photo a set of labels, maybe none) is
cleaned the same way, each label judged on its own: one binary head per label out of sample,
cleanlab's multi-label filter (`advice.label_issues.find_label_set_issues`), and for each
flagged photo the labels the heads dispute; where they are confident (as above, per label:
`RELABEL_CONFIDENCE` or their typical probability), `relabel` to the set with those labels
added or removed is suggested. In actions.csv a set is written as DATA writes it (`blue;red`
with DATA's label delimiter) and `(none)` is a photo with no label; `relabel` rewrites the
photo's label cell with the whole new set, `delete` moves the photo aside and drops its row.

Why out of sample: a photo the model trained on with a wrong label has been pulled towards
that label, so the model's own loss understates the problem. `clean` ranked by that loss
(1 - p(label), fastai's top losses) before; on imagewoof-2k with 5% of the training labels
swapped, cleanlab's ranking on out-of-sample probabilities finds more of them in the same
number of rows (benchmarks/label_errors.py, benchmarks/RESULTS.md), so the in-sample
ranking is gone (`advice.label_issues.in_sample_ranking` keeps it for the benchmark).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import TYPE_CHECKING

import numpy as np

from clearclass import fileio
from clearclass.advice.features import RunFeatures, run_features
from clearclass.advice.label_issues import (
    LabelIssue,
    LabelSetIssue,
    find_label_issues,
    find_label_set_issues,
)
from clearclass.advice.near_duplicates import NearDuplicate, find_near_duplicates
from clearclass.advice.out_of_sample import (
    DEFAULT_FOLDS,
    out_of_sample_probabilities,
    require_libraries,
    usable_folds,
)
from clearclass.advice.outliers import Outliers, find_outliers
from clearclass.bundle import sha256
from clearclass.data.checks import DuplicateIndex, Examined, examine_file
from clearclass.data.sources import (
    BOMS,
    Photo,
    PhotoSet,
    column_name,
    display_names,
    find_photos,
    label_text,
    listed_file,
    read_table,
    sniff_delimiter,
    utf16_without_bom,
)
from clearclass.errors import DataError, RunError, check_count
from clearclass.parallel import StopBetweenSteps, default_workers, map_in_order
from clearclass.progress import bar, say, warn
from clearclass.run_folder import RunFolder
from clearclass.task import DEFAULT_LABEL_DELIMITER, split_labels

if TYPE_CHECKING:
    from clearclass.training.config import TrainConfig

# The heads (out of sample) must give the other class at least this probability, or at
# least their typical probability for the photos labelled with that class when that is
# lower, for `relabel` to be suggested; below it the photo is listed to look at, with `keep`.
# On imagewoof-2k with 80 training labels swapped (benchmarks/label_errors.py, seed 42),
# cleanlab flagged all 80; at 70% alone relabelling was suggested for 49 of them, each to its
# true breed, and for 7 other photos (60%: 54 and 23; 80%: 37 and 2); with the typical
# probability (0.56 to 0.75 there) for 50 and 18. The second part is for small datasets:
# heads fitted on a hundred photos are less sure of everything (on 120 of these photos, 5
# breeds with 5 labels swapped, they gave the true breed 39% to 68%), so a fixed 70% would
# suggest none.
RELABEL_CONFIDENCE = 0.7
# An outlier is suggested for deletion when the heads that never saw it give its label
# less than this (they do not recognise it as its class either); else it is kept.
OUTLIER_DELETE_BELOW = 0.5
UNSURE_MODEL = 0.5  # a median top probability under it: the list is mostly noise
# Multi-label: a median, over the photos, of each one's mean sureness of its yes/no decisions
# (the probability of the side decided, 0.5 to 1) under this says the same: its typical
# decision is nearer a coin toss than certainty.
UNSURE_MULTI_LABEL = 0.75
# A list of likely mislabelled photos longer than this share of the photos judged says the
# heads tell the classes apart too little, not which labels are wrong. Measured: 14% on
# imagewoof-2k with 5% of its labels swapped (predicted_neq_given, benchmarks/RESULTS.md's
# "Label errors"); a multi-label model with every label right lists far more, 45% of 600
# generated shapes (accuracy_multi 87%) and 96% of 1,300 collages (79%, F1 micro 0.41).
MANY_FLAGGED = 0.3
NO_LABELS = "(none)"  # a multi-label photo without a label, in actions.csv
TABLE_ROWS = 15  # rows the command prints; actions.csv and the page hold more
PAGE_ROWS = 300  # rows shown with thumbnails in index.html (about 6 KB each)
CLEAN_FOLDER = "clean"
ACTIONS_FILE, PAGE_FILE, LOG_FILE, REMOVED = "actions.csv", "index.html", "applied.json", "removed"

# What was found (the `reason` column of actions.csv).
MISLABELLED = "likely mislabelled"
UNREADABLE = "unreadable"
MISSING = "missing"
ACROSS_SPLITS = "duplicate across train and valid"
ACROSS_CLASSES = "duplicate across classes"
WITHIN_CLASS = "duplicate within a class"
OUTLIER = "unlike any class"
KEEP, RELABEL, DELETE = "keep", "relabel", "delete"
ACTIONS = (KEEP, RELABEL, DELETE)
COLUMNS = ("path", "split", "label", "action", "new_label", "reason", "evidence")
# How sure a problem is, to order the list. A mislabelling scores 1 - its self-confidence
# (the probability heads that never saw it give its label), 0 to 1: cleanlab's ranking.
# By self-confidence rather than by the margin p(other) - p(label): on imagewoof-2k with 80
# labels swapped (benchmarks/label_errors.py, seed 42) cleanlab's normalized margin put 75%
# of them among the first 80, self-confidence 86%. An outlier scores 1 - 1/ratio (0 to 1,
# `_outliers`), so the two kinds interleave; duplicates across splits or classes and
# unreadable files come before both, duplicates within a class after most.
_SCORES = {UNREADABLE: 3.0, MISSING: 2.9, (ACROSS_CLASSES, "identical"): 2.6,
           (ACROSS_CLASSES, "near"): 2.5, (ACROSS_SPLITS, "identical"): 2.3,
           (ACROSS_SPLITS, "near"): 2.2, (WITHIN_CLASS, "identical"): 0.45,
           (WITHIN_CLASS, "near"): 0.2}


class _LabelNames:
    """`label` and `new_label`: what `class_id` and `new_class_id` were called before; kept
    for code written then."""

    class_id: str
    new_class_id: str

    @property
    def label(self) -> str:
        return self.class_id

    @property
    def new_label(self) -> str:
        return self.new_class_id


@dataclass(frozen=True)
class Finding(_LabelNames):
    """One reason to look at one photo: what was found, the action suggested, the evidence.

    `other` is the photo it duplicates, or (for a mislabelling) a photo the model is
    surest of in the suggested class. `class_id`, `new_class_id` and `other_class_id` are
    class ids (folder names, or the label cells of a labels CSV).
    """

    path: Path
    class_id: str
    split: str  # "train", "valid", or "" for a file training skipped
    problem: str
    action: str
    evidence: str
    score: float
    new_class_id: str = ""
    other: Path | None = None
    other_class_id: str = ""  # the other copy's class, or the class the model says
    # Multi-label: the photo's set of labels (its class_id is them written out, for
    # messages), and the set suggested instead with `relabel`.
    labels: tuple[str, ...] | None = None
    new_labels: tuple[str, ...] | None = None

    @property
    def other_caption(self) -> str:
        return "other copy" if self.problem != MISLABELLED else "surest photo of the class"

    @property
    def other_label(self) -> str:
        """The other photo's class id; kept for code written before `other_class_id`."""
        return self.other_class_id


# What `clean` returned lists of before it was named `Finding`.
Candidate = Finding


@dataclass(frozen=True)
class Action(_LabelNames):
    """A row of actions.csv: one photo, every problem found with it, one action."""

    path: Path
    class_id: str  # actions.csv's `label` column
    split: str
    action: str
    new_class_id: str  # actions.csv's `new_label` column
    reason: str
    evidence: str
    score: float
    findings: tuple[Finding, ...]
    labels: tuple[str, ...] | None = None  # multi-label: the photo's set
    new_labels: tuple[str, ...] | None = None  # multi-label: the set to relabel it with

    @property
    def candidates(self) -> tuple[Finding, ...]:
        """The findings; kept for code written before `findings`."""
        return self.findings


@dataclass(repr=False)
class Cleaning:
    """What `clean` found in a run's photos, as data: `mislabelled`, `duplicates`,
    `outliers`, `unreadable` (lists of `Finding`, most likely first) and `actions` (one per photo,
    as in actions.csv).

    Example:
        cleaning = clearclass.clean("runs/dogs")
        print(cleaning.summary())
        for c in cleaning.mislabelled[:3]:
            print(c.path.name, c.class_id, "->", c.new_class_id or "?", c.evidence)
    """

    run_dir: Path
    data_root: Path | None  # paths in actions.csv are relative to it
    class_ids: list[str]
    class_names: list[str]
    findings: list[Finding]
    checked: Counter = field(default_factory=Counter)  # photos checked by split
    folder: Path | None = None  # RUN/clean, once written
    task: str = "single"  # "multi": a set of labels per photo
    # Multi-label: what joins the labels of a set in actions.csv, as in DATA's label cells.
    cell_delimiter: str = DEFAULT_LABEL_DELIMITER

    @property
    def is_multi_label(self) -> bool:
        return self.task == "multi"

    @property
    def candidates(self) -> list[Finding]:
        """The findings; kept for code written before `findings`."""
        return self.findings

    @property
    def mislabelled(self) -> list[Finding]:
        return [c for c in self.findings if c.problem == MISLABELLED]

    @property
    def duplicates(self) -> list[Finding]:
        return [c for c in self.findings
                if c.problem in (ACROSS_SPLITS, ACROSS_CLASSES, WITHIN_CLASS)]

    @property
    def unreadable(self) -> list[Finding]:
        return [c for c in self.findings if c.problem in (UNREADABLE, MISSING)]

    @property
    def outliers(self) -> list[Finding]:
        return [c for c in self.findings if c.problem == OUTLIER]

    @property
    def actions(self) -> list[Action]:
        """One action per photo, most likely problem first: delete wins over relabel, which
        wins over keep."""
        by_path: dict[Path, list[Finding]] = {}
        for c in self.findings:
            by_path.setdefault(c.path, []).append(c)
        rows = []
        for path, found in by_path.items():
            found.sort(key=lambda c: -c.score)
            chosen = min(found, key=lambda c: (ACTIONS[::-1].index(c.action), -c.score))
            relabel = chosen.action == RELABEL
            rows.append(Action(path, found[0].class_id, found[0].split, chosen.action,
                               chosen.new_class_id if relabel else "",
                               "; ".join(dict.fromkeys(c.problem for c in found)),
                               " | ".join(c.evidence for c in found), found[0].score,
                               tuple(found), found[0].labels,
                               chosen.new_labels if relabel else None))
        rows.sort(key=lambda a: (-a.score, str(a.path)))
        return rows

    def name(self, class_id: str) -> str:
        """The display name of a class id."""
        return dict(zip(self.class_ids, self.class_names)).get(class_id, class_id)

    def shown_label(self, class_id: str, labels: tuple[str, ...] | None = None) -> str:
        """A photo's class by display name, or (multi-label, `labels`) its set of labels."""
        if labels is None:
            return self.name(class_id)
        return label_text(tuple(self.name(c) for c in labels))

    def cell(self, labels: tuple[str, ...] | None, class_id: str = "") -> str:
        """A photo's label as actions.csv writes it: its class id, or (multi-label) its set
        joined as DATA joins labels (`(none)` for no label)."""
        if labels is None:
            return class_id
        return self.cell_delimiter.join(labels) if labels else NO_LABELS

    def shown(self, path: Path) -> str:
        """`path` as actions.csv writes it: relative to DATA when inside it."""
        return _relative_text(path, self.data_root)

    def counts(self) -> Counter:
        return Counter(c.problem for c in self.findings)

    def summary(self, rows: int = 5) -> str:
        """What was checked and found, the first rows, and where the files are."""
        checked = ", ".join(f"{n} {split or 'skipped in training'}"
                            for split, n in sorted(self.checked.items()))
        counts = self.counts()
        found = ", ".join(f"{n} {problem}" for problem, n in counts.most_common()) or "nothing"
        lines = [f"Checked {sum(self.checked.values())} photos of {self.run_dir} ({checked}): "
                 f"{found}."]
        for i, a in enumerate(self.actions[:rows], start=1):
            lines.append(f"  {i}. {self.shown(a.path)} "
                         f"({self.shown_label(a.class_id, a.labels)}): "
                         f"{_action_text(a, self)}; {a.evidence}")
        if self.folder is not None:
            lines.append(f"Actions to edit: {self.folder / ACTIONS_FILE}")
            lines.append(f"With thumbnails: {self.folder / PAGE_FILE}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def to_table(self, limit: int = TABLE_ROWS):
        """The first `limit` actions as a rich table (what the command prints)."""
        from rich.table import Table

        table = Table(title=f"Most likely problems first ({len(self.actions)} photos listed)")
        for column in ("#", "photo", "label", "action", "evidence"):
            table.add_column(column, overflow="fold")
        for i, a in enumerate(self.actions[:limit], start=1):
            table.add_row(*map(fileio.shown_name, (  # rich counts \xe9 as 4 characters
                str(i), self.shown(a.path), self.shown_label(a.class_id, a.labels),
                _action_text(a, self), a.evidence)))
        return table

    def _repr_html_(self) -> str:
        from clearclass import pages

        return pages.render("cleaning_summary.html", summary=self.summary(rows=0),
                            rows=_rows(self, self.actions[:10]))


def clean(run: str | Path, device: str = "auto", folds: int = DEFAULT_FOLDS) -> Cleaning:
    """List the photos of a run that are likely mislabelled, unlike any class, duplicated
    or unreadable.

    Writes RUN/clean/actions.csv (to edit, then `apply_actions`) and RUN/clean/index.html.
    `folds`: how many heads judge the labels, each photo by one that never saw it.

    Example:
        cleaning = clearclass.clean("runs/dogs")
        for action in cleaning.actions[:5]:
            print(action.action, action.path.name, action.evidence)
    """
    run_folder = RunFolder.open(run, needs_model=True)
    folder = run_folder.path / CLEAN_FOLDER
    with fileio.exclusive(folder, what="run"):
        cleaning = find(run_folder.path, device, folds)
        cleaning.folder = _write(cleaning, folder)
    return cleaning


def find(run: str | Path, device: str = "auto", folds: int = DEFAULT_FOLDS) -> Cleaning:
    """What `clean` lists, as data, without writing RUN/clean/ (`advise` counts it per
    class).

    Example:
        found = find("runs/dogs")
        print(found.counts())
    """
    folds = check_count("folds", folds, least=2)
    require_libraries("clean")  # before the features pass, not after it
    run_folder = RunFolder.open(run, needs_model=True)
    run_dir = run_folder.path
    folder = run_dir / CLEAN_FOLDER
    if (folder / LOG_FILE).exists():
        raise RunError(_stopped(run_dir, folder / LOG_FILE) or
                       f"Actions were applied to this run's photos ({folder / LOG_FILE}), "
                       f"so {run_dir}/split.csv no longer matches them. Train again and "
                       f"look at the new run, or put the photos back first: "
                       f"{_undo_command(run_dir)}")
    info = run_folder.model_info()
    class_ids = list(info.class_ids)
    split = run_folder.split(class_ids)  # checked against config.json's record
    for note in split.notes:
        say(note)
    data_root = _data_root(_recorded_data(run_folder))
    extra, label_split = _skipped_in_training(run_folder, split)
    examined = _examine(split.photos + extra)
    # Photos of DATA that are not in the split and can be read were added since.
    photos = split.photos + [p for p in extra if not isinstance(examined[p.path], Examined)]
    readable = [p for p in photos if isinstance(examined[p.path], Examined) and p.class_id]
    in_split = {p.path for p in split.photos}
    cleaning = Cleaning(run_dir, data_root, class_ids, list(info.class_names),
                        [], Counter(_split_name(p, in_split) for p in photos),
                        task=info.task, cell_delimiter=_cell_delimiter(label_split, run_folder))
    judged = _judge(cleaning, run_folder, device, any(p.path in in_split for p in readable),
                    folds)
    cleaning.findings = _find(cleaning, photos, in_split, examined, judged)
    cleaning.findings.sort(key=lambda c: (-c.score, str(c.path)))
    if not _warn_if_unsure(judged.own, run_dir, cleaning.is_multi_label):
        _warn_if_many_flagged(cleaning, len(judged.paths))
    return cleaning


def _cell_delimiter(found: str | None, run: RunFolder) -> str:
    """What joins a multi-label set's labels in actions.csv: DATA's label delimiter as
    `found` reading DATA (a space for whitespace); when DATA could not be read, the run's
    --label-delimiter, else ';'."""
    if found is not None:
        return found
    return _run_config(run).label_delimiter or DEFAULT_LABEL_DELIMITER


def _warn_if_many_flagged(cleaning: Cleaning, judged: int) -> None:
    """Too long a list of likely mislabelled photos (MANY_FLAGGED) is the heads' doubt, not
    the labels' errors: say so, and what is still worth reading in it."""
    flagged = len(cleaning.mislabelled)
    if judged and flagged > MANY_FLAGGED * judged:
        kinds = "labels" if cleaning.is_multi_label else "classes"
        warn(f"{flagged} of {judged} photos ({flagged / judged:.0%}) are listed as likely "
             "mislabelled: far more than a labelled set has wrong, so the heads on this "
             f"model's features tell its {kinds} apart too little to say which. Read the "
             "first rows (the most doubtful first); a better model (more epochs or photos, "
             "a larger --item-resize) makes a shorter, surer list.")


def _warn_if_unsure(probabilities: np.ndarray, run_dir: Path, multi_label: bool = False) -> bool:
    """A model that hesitates over most photos (its own `probabilities`) has features that
    tell the classes apart little, so the heads on them rank by noise: say so (True)."""
    if not len(probabilities):
        return False
    if multi_label:
        sureness = np.maximum(probabilities, 1 - probabilities).mean(axis=1)
        typical = float(np.median(sureness))
        if typical < UNSURE_MULTI_LABEL:
            warn(f"The model of {run_dir} is unsure of most photos (its yes or no to each "
                 f"label is {typical:.0%} sure on average, for half of them), so this list "
                 "says little. Train longer for a useful one (more epochs, or a smaller "
                 "--batch-size on few photos), then clean the new run.")
        return typical < UNSURE_MULTI_LABEL
    typical = float(np.median(probabilities.max(axis=1)))
    if typical < UNSURE_MODEL:
        warn(f"The model of {run_dir} is unsure of most photos (its most likely class gets "
             f"{typical:.0%} for half of them), so this list says little. Train longer for a "
             "useful one (more epochs, or a smaller --batch-size on few photos), then clean "
             "the new run.")
    return typical < UNSURE_MODEL


def apply_actions(run: str | Path, actions: str | Path) -> AppliedActions:
    """Apply an edited actions.csv to the run's photos (DATA); `undo` reverses it.

    `delete` moves the photo into RUN/clean/removed/, `relabel` moves it into the class
    folder of `new_label` (or edits the label in DATA's labels CSV), `keep` does nothing.
    Nothing changes unless every row can be applied.

    Example:
        clearclass.clean("runs/dogs")
        applied = apply_actions("runs/dogs", "runs/dogs/clean/actions.csv")
        print(applied.relabelled, "relabelled,", applied.deleted, "moved aside")
        undo("runs/dogs")  # and back
    """
    run_folder = RunFolder.open(run, needs_model=True)
    run_dir = run_folder.path
    folder = run_dir / CLEAN_FOLDER
    actions_csv = Path(actions).expanduser()
    with fileio.exclusive(folder, what="run"):
        log_path = folder / LOG_FILE
        if log_path.exists():
            raise RunError(_stopped(run_dir, log_path) or
                           f"Actions were applied to this run's photos already ({log_path}). "
                           f"Undo them first ({_undo_command(run_dir)}), or train again and "
                           "clean the new run.")
        rows = _read_actions(actions_csv)
        dataset = _current_dataset(run_folder)
        # The log holds absolute paths: `undo` may run from another folder.
        plan = _plan(rows, dataset, folder.resolve(), actions_csv)
        applied = AppliedActions(dataset.source, log_path, plan.relabelled, plan.deleted)
        if not plan.operations:
            say(f"Nothing to apply: every row of {actions_csv} says keep.")
            return applied
        steps = _Steps(sum(op["op"] == "move" for op in plan.operations))
        try:
            with steps:
                _execute(plan, log_path, dataset, actions_csv, steps)
        except BaseException as e:  # Ctrl-C, or an error such as a full disk
            what = "stopped" if isinstance(e, KeyboardInterrupt) else "failed"
            if not steps.logged:
                warn(f"Apply {what} before it changed anything.")
            else:
                table = ""
                if plan.relabel_rows or plan.drop_rows:
                    table = f", {dataset.source.name} {'' if steps.edited else 'not yet '}edited"
                warn(f"Apply {what}: {steps.done} of {steps.total} moves made{table}; every "
                     f"change is logged in {log_path}. Put the photos back as they were with: "
                     f"{_undo_command(run_dir)}")
            raise
    say(f"Applied {actions_csv} to {dataset.source}: {plan.relabelled} photo(s) relabelled, "
        f"{plan.deleted} moved into {folder / REMOVED}. Every change is logged in {log_path}; "
        f"`{_undo_command(run_dir)}` puts them back.")
    warn(f"{run_dir}/split.csv no longer matches the photos: train again to use them, e.g. "
         f"clearclass train {dataset.source} --out NEW_RUN")
    return applied


@dataclass(frozen=True)
class AppliedActions:
    """What `apply_actions` did: the data changed, the log `undo` reads, and counts."""

    data: Path
    log: Path
    relabelled: int
    deleted: int


def undo(run: str | Path) -> int:
    """Reverse the last `apply_actions` on a run's photos (the changes it logged, newest
    first); returns how many changes were reversed (0 when none are applied).

    Example:
        clearclass.clean("runs/dogs")
        apply_actions("runs/dogs", "runs/dogs/clean/actions.csv")
        print(undo("runs/dogs"), "changes reversed")
    """
    run_dir = RunFolder.open(run, needs_model=True).path
    folder = run_dir / CLEAN_FOLDER
    log_path = folder / LOG_FILE
    with fileio.exclusive(folder, what="run"):
        if not log_path.is_file():
            _tidy(folder, [])
            say(f"Nothing to undo: no actions are applied to the photos of {run_dir}.")
            return 0
        try:
            log = json.loads(log_path.read_text(encoding="utf-8"))
            operations = list(log["operations"])
            problems = [problem for op in operations if (problem := _undo_problem(op))]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RunError(f"{log_path} is damaged ({type(e).__name__}: {e}); the changes it "
                           "logged must be reversed by hand.") from None
        if problems:
            raise RunError(f"Cannot undo {log_path}: {len(problems)} change(s) no longer match "
                           f"the files: {'; '.join(problems[:3])}"
                           f"{'; ...' if len(problems) > 3 else ''}. Nothing was changed; put "
                           "the files back as the log says, or move them by hand.")
        steps = _Steps(len(operations))
        try:
            with steps:
                if not log.get("undoing"):  # `clean` and `--apply` then say an undo stopped
                    fileio.write_json(log_path, {**log, "undoing": True})
                for op in reversed(operations):
                    steps.check()
                    steps.done += _reverse(op)
                steps.check()
                _tidy(folder, operations)
                log_path.unlink()
        except BaseException as e:  # Ctrl-C, or an error such as a full disk
            what = "stopped" if isinstance(e, KeyboardInterrupt) else "failed"
            warn(f"Undo {what}: {steps.done} change(s) put back so far; {log_path} still lists "
                 f"them all. Finish it with: {_undo_command(run_dir)}")
            raise
    say(f"Reversed {steps.done} change(s) to {log.get('data', 'the photos')}; they are "
        "as before the apply.")
    return steps.done


def _undo_command(run_dir: Path) -> str:
    return f"clearclass clean {quote(str(run_dir))} --undo"


def _stopped(run_dir: Path, log_path: Path) -> str:
    """What an apply or undo that was stopped before it finished left (the log at
    `log_path` says), and the command that finishes putting the photos back; "" if none."""
    try:
        log = json.loads(log_path.read_text(encoding="utf-8"))
        moves = [op for op in log["operations"] if op["op"] == "move"]
        made = sum(os.path.lexists(op["to"]) for op in moves)
        complete, undoing = log.get("complete"), log.get("undoing")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""
    if undoing:
        return (f"An undo of the actions applied to this run's photos was stopped before it "
                f"finished ({log_path}), so they are partly put back. Finish it with: "
                f"{_undo_command(run_dir)}")
    if not complete:
        return (f"An apply of actions to this run's photos was stopped before it finished "
                f"({made} of {len(moves)} moves made; {log_path}). Put the photos back as they "
                f"were with: {_undo_command(run_dir)} (then apply again if you like)")
    return ""


class _Steps(StopBetweenSteps):
    """The changes an apply or undo made so far. Ctrl-C (SIGINT) and SIGTERM stop it between
    two changes (`check`); a second Ctrl-C stops at once (`undo` finishes what it cut short)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total, self.done = total, 0
        self.logged, self.edited = False, False  # the apply's log written; its table edited


# --- finding ---------------------------------------------------------------------------------

def _recorded_data(run: RunFolder) -> Path:
    """DATA as the run recorded it: model.json's absolute path, else config.json's."""
    data = run.model_info().training.get("data")
    if isinstance(data, str):
        return Path(data)
    return Path(_run_config(run).data).expanduser().resolve()


def _data_root(source: Path | None) -> Path | None:
    if source is None:
        return None
    return source.parent if source.suffix.lower() in (".csv", ".tsv", ".txt") else source


def _relative_text(path: Path, root: Path | None) -> str:
    """`path` relative to `root` (through links too), in / form; else `path` whole."""
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
        with contextlib.suppress(ValueError, OSError):
            return Path(os.path.realpath(path)).relative_to(os.path.realpath(root)).as_posix()
    return str(path)


def _split_name(photo: Photo, in_split: set[Path]) -> str:
    if photo.path not in in_split:
        return ""
    return "valid" if photo.is_valid else "train"


def _skipped_in_training(run: RunFolder, split: PhotoSet) -> tuple[list[Photo], str | None]:
    """The photos of DATA that are not in the split: the files training could not read (or
    photos added since, which are examined and left out when they can be read); and what
    joins a multi-label set's labels in DATA (`_label_joiner`), None when DATA cannot be
    read."""
    run_dir = run.path
    source = _recorded_data(run)
    if not source.exists():
        warn(f"The photos {run_dir} was trained on ({source}) are not there any more; only "
             "the photos of its split.csv are checked.")
        return [], None
    try:
        found = _read_data(source, _run_config(run))
    except DataError as e:
        warn(f"Only the photos of {run_dir}/split.csv are checked: {e}")
        return [], None
    known = {os.path.realpath(p.path) for p in split.photos}
    return ([p.with_split(False) for p in found.photos
             if os.path.realpath(p.path) not in known], _label_joiner(found))


def _read_data(source: Path, config: TrainConfig) -> PhotoSet:
    """DATA's photos as the run read them: the same split, task and label delimiter."""
    return find_photos(source, config.validation_fraction, config.seed, config.task,
                       config.label_delimiter)


def _label_joiner(photos: PhotoSet) -> str:
    """What joins a multi-label set's labels as `photos`' label cells do (a space where
    they are split on whitespace)."""
    return (photos.label_delimiter or " ") if photos.task == "multi" else DEFAULT_LABEL_DELIMITER


def _run_config(run: RunFolder) -> TrainConfig:
    """The run's settings. Every run has a config.json (`RunFolder.open` checks it); one
    that is damaged is an error naming it, as resuming the run would be."""
    return run.config(cannot="restore it from a copy, or train the run again")


def _examine_file(path: Path) -> Examined | str:
    """`verify`'s check of one file; a file gone since training is MISSING."""
    return examine_file(path) if path.exists() else MISSING


def _examine(photos: list[Photo]) -> dict[Path, Examined | str]:
    examined = {}
    with bar("checking photos", len(photos)) as progress:
        for path, outcome in map_in_order(_examine_file, [p.path for p in photos],
                                          default_workers()):
            examined[path] = outcome
            progress.advance()
    return examined


@dataclass
class _Judged:
    """What the run's features say about its photos; arrays in `paths`' order (the photos
    of split.csv that could be read)."""

    paths: list[Path]
    own: np.ndarray  # the model's own probabilities: in sample for the training photos
    probabilities: np.ndarray  # out of sample: each row from heads that never saw the photo
    issues: list[LabelIssue]  # cleanlab's, least self-confident first
    outliers: Outliers | None
    near: list[NearDuplicate]
    # Multi-label: cleanlab's photos with a likely wrong set of labels, least likely first
    # (`issues` is then empty), and the probabilities are each label's own.
    set_issues: list[LabelSetIssue] = field(default_factory=list)
    unjudged: frozenset[int] = frozenset()  # multi-label: labels no head could learn

    @property
    def index(self) -> dict[Path, int]:
        return {path: i for i, path in enumerate(self.paths)}

    def agreement(self, row: int, labels: tuple[int, ...] | int) -> float:
        """How likely the heads that never saw photo `row` find its label: the probability
        of class `labels`; multi-label (a tuple), that of the least likely label of its
        set, or for no label, of there being none (1 - the likeliest label's). NaN for a
        set whose labels no head could learn (`unjudged`): no judgement, not 0%."""
        if isinstance(labels, int):
            return float(self.probabilities[row, labels])
        chances = self.probabilities[row]
        judged = [j for j in labels if j not in self.unjudged]
        if labels and not judged:
            return float("nan")
        if not labels:
            return float(1 - chances.max()) if len(chances) else 1.0
        return float(chances[judged].min())


def _judge(cleaning: Cleaning, run: RunFolder, device: str, any_readable: bool,
           folds: int) -> _Judged:
    """The features of the run's photos (one pass of the network, kept in RUN/advice),
    out-of-sample probabilities from them, and what cleanlab and the neighbours in feature
    space make of those."""
    classes = len(cleaning.class_ids)
    if not any_readable:
        return _Judged([], np.zeros((0, classes)), np.zeros((0, classes)), [], None, [])
    found = run_features(run.path, device)
    paths = [Path(p) for p in found.paths]
    if len(found) == 0:
        return _Judged([], np.zeros((0, classes)), np.zeros((0, classes)), [], None, [])
    unjudged: frozenset[int] = frozenset()
    if found.is_multi_label:
        probabilities = _out_of_sample_labels(found, cleaning, folds)
        judged = _judged_labels(found, cleaning) if probabilities is not None else []
        unjudged = frozenset(range(len(found.class_ids))) - set(judged)
        issues, set_issues = [], ([] if probabilities is None else find_label_set_issues(
            probabilities, found.targets, labels=judged))
    else:
        probabilities = _out_of_sample(found, cleaning, folds)
        issues = [] if probabilities is None else find_label_issues(probabilities,
                                                                    found.targets)
        set_issues = []
    return _Judged(paths, found.probabilities,
                   found.probabilities if probabilities is None else probabilities, issues,
                   find_outliers(found.features), find_near_duplicates(found.features),
                   set_issues, unjudged)


def _out_of_sample(found: RunFeatures, cleaning: Cleaning, asked: int) -> np.ndarray | None:
    """Each photo's class probabilities from logistic-regression heads on the features of
    the other folds; None (said) when the photos are all of one class."""
    counts = np.bincount(found.targets, minlength=len(found.class_ids))
    if (counts > 0).sum() < 2:
        warn(f"The readable photos of {cleaning.run_dir} are all of one class, so no label "
             "can be judged against another: only duplicates, photos unlike the others and "
             "unreadable files are listed.")
        return None
    folds = usable_folds(found.targets, asked)
    if folds < asked:
        smallest = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        warn(f"Class {cleaning.name(found.class_ids[smallest])} has only {counts[smallest]} "
             f"photo(s): {folds} folds instead of {asked}, so the labels of small "
             "classes are judged less surely. More photos per class give a surer list.")
    say(f"Judging {len(found)} photos out of sample ({folds} folds).")
    return out_of_sample_probabilities(found.features, found.targets, len(found.class_ids),
                                       folds=folds)


def _judged_labels(found: RunFeatures, cleaning: Cleaning) -> list[int]:
    """The labels whose photos can be judged out of sample: those on 2 photos or more and
    missing from 2 or more. The one photo with a label (or without it) is judged by heads
    that never saw the label on a photo (or off one), which would find every such label
    wrong; they are said in a line instead."""
    with_ = found.targets.sum(axis=0)
    scarce = np.minimum(with_, len(found) - with_)
    alone = [found.class_ids[j] for j in np.flatnonzero(scarce == 1)]
    if alone:
        warn(f"Not judged: {', '.join(cleaning.name(c) for c in alone[:3])}"
             f"{' and more' if len(alone) > 3 else ''} (on one photo only, or missing from "
             "one only), which no head can learn without that photo. Add photos to have "
             "them judged.")
    return [int(j) for j in np.flatnonzero(scarce >= 2)]


def _out_of_sample_labels(found: RunFeatures, cleaning: Cleaning,
                          asked: int) -> np.ndarray | None:
    """Multi-label: each photo's probability of each label from a binary head per label on
    the features of the other folds; None (said) when no label is on some photos and not on
    others."""
    with_ = found.targets.sum(axis=0)
    scarce = np.minimum(with_, len(found) - with_)  # photos with the label, or without it
    if not (scarce > 0).any():
        warn(f"The readable photos of {cleaning.run_dir} all have the same labels, so no "
             "label can be judged: only duplicates, photos unlike the others and unreadable "
             "files are listed.")
        return None
    folds = usable_folds(found.targets, asked)
    if folds < asked:  # the rarest label that can be judged (`_judged_labels`)
        judged = scarce >= 2 if (scarce >= 2).any() else scarce > 0
        rarest = int(np.argmin(np.where(judged, scarce, np.iinfo(np.int64).max)))
        on = int(with_[rarest])
        which = (f"is on only {on} photo(s)" if on == scarce[rarest] else
                 f"is missing from only {len(found) - on} photo(s)")
        warn(f"Label {cleaning.name(found.class_ids[rarest])} {which}: {folds} folds instead "
             f"of {asked}, so rare labels are judged less surely. More photos per label give "
             "a surer list.")
    say(f"Judging {len(found)} photos out of sample ({folds} folds, a head per label).")
    return out_of_sample_probabilities(found.features, found.targets, len(found.class_ids),
                                       folds=folds)


def _find(cleaning: Cleaning, photos: list[Photo], in_split: set[Path],
          examined: dict[Path, Examined | str], judged: _Judged) -> list[Finding]:
    ids, name = cleaning.class_ids, cleaning.name
    column = {c: i for i, c in enumerate(ids)}
    found = []
    for p in photos:  # unreadable first: no features, no hash
        outcome = examined[p.path]
        if isinstance(outcome, Examined):
            continue
        split = _split_name(p, in_split)
        if outcome == MISSING:
            found.append(Finding(p.path, p.class_id, split, MISSING, KEEP,
                                   "no longer exists: it was moved or deleted since training",
                                   _SCORES[MISSING]))
        else:
            where = "" if split else "; training skipped it"
            found.append(Finding(p.path, p.class_id, split, UNREADABLE, DELETE,
                                   f"{outcome}{where}", _SCORES[UNREADABLE]))

    photo_of = {p.path: p for p in photos if p.path in in_split}
    examples = _surest_photos(photos, judged, column)
    found += _mislabelled_sets(cleaning, judged, photo_of, in_split, examples)
    for issue in judged.issues:
        p = photo_of.get(judged.paths[issue.index])
        if p is None:
            continue
        likely = ids[issue.likely]
        relabel = issue.likely_probability >= min(RELABEL_CONFIDENCE, issue.likely_typical)
        evidence = (f"judged without it (out of sample): {name(likely)} "
                    f"{issue.likely_probability:.0%}, {name(p.class_id)} (its label) "
                    f"{issue.self_confidence:.0%}")
        # 1 - self-confidence: cleanlab's ranking, 0 to 1 as the other problems expect.
        found.append(Finding(p.path, p.class_id, _split_name(p, in_split), MISLABELLED,
                               RELABEL if relabel else KEEP, evidence,
                               1.0 - issue.self_confidence, likely if relabel else "",
                               examples.get(likely), likely))
    found += _outliers(cleaning, judged, photo_of, in_split, column)
    found += _duplicates(cleaning, photos, in_split, examined, judged, column)
    return found


def _mislabelled_sets(cleaning: Cleaning, judged: _Judged, photo_of: dict[Path, Photo],
                      in_split: set[Path], examples: dict[str, Path]) -> list[Finding]:
    """Multi-label: the photos cleanlab flags, each with the labels the heads dispute; where
    they are confident of one (`RELABEL_CONFIDENCE`, or their typical probability for such
    photos when lower, as for one class per photo), the set with it added or removed is
    suggested."""
    ids, name = cleaning.class_ids, cleaning.name
    found = []
    for issue in judged.set_issues:
        p = photo_of.get(judged.paths[issue.index])
        if p is None:
            continue
        chances = judged.probabilities[issue.index]
        added, removed = [], []
        for j, typical in zip(issue.disputed, issue.typical):
            has = j in issue.given
            sure = 1 - chances[j] if has else chances[j]
            if sure >= min(RELABEL_CONFIDENCE, typical):
                (removed if has else added).append(ids[j])
        new = tuple(sorted((set(p.label_set) - set(removed)) | set(added)))
        relabel = bool(added or removed)
        disputed = ", ".join(f"{name(ids[j])} {chances[j]:.0%} ("
                             + ("one of its labels" if j in issue.given else
                                "not among its labels") + ")" for j in issue.disputed[:3])
        evidence = (f"judged without it (out of sample): {disputed or 'its labels unlikely'}"
                    + (f"; suggested labels: {cleaning.shown_label('', new)}" if relabel
                       else ""))
        # 1 - cleanlab's quality score of the set, 0 to 1 as the other problems expect.
        other = added[0] if added else ""
        found.append(Finding(p.path, p.class_id, _split_name(p, in_split), MISLABELLED,
                             RELABEL if relabel else KEEP, evidence, 1.0 - issue.quality,
                             label_text(new) if relabel else "", examples.get(other),
                             other, labels=p.label_set, new_labels=new if relabel else None))
    return found


def _outliers(cleaning: Cleaning, judged: _Judged, photo_of: dict[Path, Photo],
              in_split: set[Path], column: dict[str, int]) -> list[Finding]:
    """The photos far from all the others in feature space (Datalab's rule, `outliers`)."""
    if judged.outliers is None:
        return []
    found = []
    for i in judged.outliers.ranked:
        p = photo_of.get(judged.paths[i])
        if p is None:
            continue
        ratio = float(judged.outliers.ratio[i])
        given = judged.agreement(i, _columns(p, column))
        # Delete only a photo the heads do not put in its class either (a cat among the
        # dogs, a screenshot, a blank frame): it teaches nothing, and `apply` only moves it
        # into RUN/clean/removed, which `undo` reverses. One they do recognise is an
        # unusual photo of its class (a rare pose, odd light), the kind that teaches the
        # model the class's range: keep it, listed for a look.
        action = DELETE if given < OUTLIER_DELETE_BELOW else KEEP  # NaN: not judged, kept
        verdict = (f"judged without it, {_agreement_text(cleaning, p)} {given:.0%}"
                   if given == given else "its labels are on too few photos to be judged")
        evidence = (f"far from every class's photos: its nearest photos are {ratio:.1f}x "
                    f"farther than is typical; {verdict}")
        # 1 - 1/ratio, 0 to 1: 2x as far as typical sorts with a mislabelling at 50%.
        found.append(Finding(p.path, p.class_id, _split_name(p, in_split), OUTLIER, action,
                             evidence, 1.0 - 1.0 / max(ratio, 1.0), labels=p.labels))
    return found


def _columns(photo: Photo, column: dict[str, int]) -> int | tuple[int, ...]:
    """A photo's class as a column of the probabilities; multi-label, its labels'."""
    if photo.labels is None:
        return column[photo.class_id]
    return tuple(column[c] for c in photo.labels)


def _agreement_text(cleaning: Cleaning, photo: Photo) -> str:
    """What `_Judged.agreement` measured for `photo`, in words."""
    if photo.labels is None:
        return f"{cleaning.name(photo.class_id)} (its label)"
    if not photo.labels:
        return "no label (it has none)"
    if len(photo.labels) == 1:
        return f"{cleaning.name(photo.labels[0])} (its label)"
    return f"its least likely label of {cleaning.shown_label('', photo.labels)}"


def _surest_photos(photos: list[Photo], judged: _Judged,
                   column: dict[str, int]) -> dict[str, Path]:
    """For each class (multi-label: each label), the photo labelled so that the heads are
    surest of (to show what the suggested class looks like)."""
    best: dict[str, tuple[float, Path]] = {}
    index = judged.index
    for p in photos:
        i = index.get(p.path)
        if i is None:
            continue
        for c in p.label_set:
            score = float(judged.probabilities[i, column[c]])
            if score > best.get(c, (-1.0, p.path))[0]:
                best[c] = (score, p.path)
    return {class_id: path for class_id, (_, path) in best.items()}


def _duplicates(cleaning: Cleaning, photos: list[Photo], in_split: set[Path],
                examined: dict[Path, Examined | str], judged: _Judged,
                column: dict[str, int]) -> list[Finding]:
    """Each later copy against the first: training photos come before validation ones, so
    that the copy found across splits is the validation one. pHash pairs first, then the
    pairs that only look the same to the model (features), each pair once."""
    index = DuplicateIndex()
    order = lambda p: (p.is_valid, str(p.path))  # noqa: E731
    ordered = sorted((p for p in photos if p.path in in_split
                      and isinstance(examined[p.path], Examined)), key=order)
    found, grouped = [], set()
    for p in ordered:
        info = examined[p.path]
        match = index.find(info.sha256, info.phash)
        if match is None:
            index.add(info.sha256, info.phash, p)
            continue
        first: Photo = match.key
        copy = ("identical to" if match.kind == "identical" else
                f"a resized or re-encoded copy ({match.bits} of 64 hash bits differ) of")
        found.append(_duplicate(cleaning, first, p, copy, match.kind, judged, column, in_split))
        grouped |= {first.path, p.path}
    photo_of = {p.path: p for p in ordered}
    for pair in judged.near:
        a, b = (photo_of.get(judged.paths[i]) for i in (pair.first, pair.second))
        if a is None or b is None or {a.path, b.path} <= grouped:
            continue  # pHash listed them already
        first, p = sorted((a, b), key=order)
        copy = f"looks the same to the model (feature similarity {pair.similarity:.2f}) as"
        found.append(_duplicate(cleaning, first, p, copy, "near", judged, column, in_split))
        grouped |= {a.path, b.path}
    return found


def _duplicate(cleaning: Cleaning, first: Photo, p: Photo, copy: str, kind: str,
               judged: _Judged, column: dict[str, int], in_split: set[Path]) -> Finding:
    """The finding for `p`, a copy of `first` (which comes first in the list's order)."""
    name = cleaning.shown_label
    if first.class_id != p.class_id:
        # Delete the copy whose label (set) the heads find less likely for the photo.
        chance = {q.class_id: _mean_agreement(judged, (p, first), _columns(q, column))
                  for q in (p, first)}
        wrong, right = ((p, first) if chance[p.class_id] <= chance[first.class_id]
                        else (first, p))
        evidence = (f"{copy} {cleaning.shown(right.path)}, labelled "
                    f"{name(right.class_id, right.labels)}; the model gives "
                    f"{name(right.class_id, right.labels)} {_percent(chance[right.class_id])}, "
                    f"{name(wrong.class_id, wrong.labels)} {_percent(chance[wrong.class_id])}")
        return Finding(wrong.path, wrong.class_id, _split_name(wrong, in_split),
                       ACROSS_CLASSES, DELETE, evidence, _SCORES[ACROSS_CLASSES, kind],
                       other=right.path, other_class_id=right.class_id, labels=wrong.labels)
    if first.is_valid != p.is_valid:
        valid, train = (p, first) if p.is_valid else (first, p)
        evidence = (f"{copy} {cleaning.shown(train.path)} (train): validation scores a "
                    "photo the model trained on")
        return Finding(valid.path, valid.class_id, "valid", ACROSS_SPLITS, DELETE, evidence,
                       _SCORES[ACROSS_SPLITS, kind], other=train.path,
                       other_class_id=train.class_id, labels=valid.labels)
    return Finding(p.path, p.class_id, _split_name(p, in_split), WITHIN_CLASS,
                   DELETE if kind == "identical" else KEEP,
                   f"{copy} {cleaning.shown(first.path)}", _SCORES[WITHIN_CLASS, kind],
                   other=first.path, other_class_id=first.class_id, labels=p.labels)


def _percent(share: float) -> str:
    """A probability as the evidence gives it; "?" where none could be judged (NaN)."""
    return f"{share:.0%}" if share == share else "?"


def _mean_agreement(judged: _Judged, photos: tuple[Photo, ...],
                    columns: int | tuple[int, ...]) -> float:
    """The heads' mean `agreement` with one label (set) over these photos (copies)."""
    index = judged.index
    rows = [index[p.path] for p in photos if p.path in index]
    return float(np.mean([judged.agreement(r, columns) for r in rows])) if rows else 0.0


# --- writing the list ------------------------------------------------------------------------

def _action_text(action: Action, cleaning: Cleaning) -> str:
    if action.action != RELABEL:
        return action.action
    return f"relabel to {cleaning.shown_label(action.new_class_id, action.new_labels)}"


def _write(cleaning: Cleaning, folder: Path) -> Path:
    actions = cleaning.actions
    fileio.write_csv(folder / ACTIONS_FILE, COLUMNS,
                     [(cleaning.shown(a.path), a.split, cleaning.cell(a.labels, a.class_id),
                       a.action, cleaning.cell(a.new_labels, a.new_class_id)
                       if a.action == RELABEL else "", a.reason, a.evidence)
                      for a in actions])
    fileio.write_text(folder / PAGE_FILE, _page(cleaning, actions, folder))
    return folder


def _page(cleaning: Cleaning, actions: list[Action], folder: Path) -> str:
    from clearclass import pages

    run = cleaning.run_dir
    return pages.render(
        "cleaning_page.html", run=run, summary=cleaning.summary(rows=0),
        actions_csv=str(folder / ACTIONS_FILE), removed=str(folder / REMOVED),
        run_argument=quote(str(run)), actions_argument=quote(str(folder / ACTIONS_FILE)),
        rows=_rows(cleaning, actions[:PAGE_ROWS]), listed=len(actions),
        multi=cleaning.is_multi_label,
        joiner="spaces" if cleaning.cell_delimiter == " " else f"'{cleaning.cell_delimiter}'",
        no_labels=NO_LABELS)


def _rows(cleaning: Cleaning, actions: list[Action]) -> list[dict]:
    """What the page and the notebook show of each action, for cleaning_rows.html."""
    from clearclass.pages import thumbnail

    def thumb(path: Path, caption: str) -> dict:
        return {"uri": thumbnail(path), "caption": caption}

    rows = []
    for i, a in enumerate(actions, start=1):
        compared = next((c for c in a.findings if c.other is not None), None)
        other = None if compared is None else thumb(
            compared.other, f"{cleaning.name(compared.other_class_id)}: {compared.other_caption}")
        rows.append({"number": i, "photo": thumb(a.path, cleaning.shown_label(a.class_id,
                                                                               a.labels)),
                     "other": other, "path": cleaning.shown(a.path),
                     "split": a.split or "skipped", "action": _action_text(a, cleaning),
                     "reason": a.reason, "evidence": a.evidence})
    return rows


# --- applying --------------------------------------------------------------------------------

@dataclass
class _Row:
    line: int
    path: str
    class_id: str  # the `label` column
    action: str
    new_class_id: str  # the `new_label` column


def _read_actions(actions_csv: Path) -> list[_Row]:
    if not actions_csv.is_file():
        raise DataError(f"{actions_csv} does not exist. Give the actions.csv that `clearclass "
                        "clean RUN` wrote (RUN/clean/actions.csv), edited as you like.")
    header, rows, _ = read_table(actions_csv)
    columns = [column_name(c) for c in header]
    missing = [c for c in ("path", "action") if c not in columns]
    if missing:
        raise DataError(f"{actions_csv} has no {' or '.join(missing)} column; it needs the "
                        f"columns {', '.join(COLUMNS)} as `clearclass clean` writes them.")
    at = {c: columns.index(c) for c in ("path", "label", "action", "new_label") if c in columns}

    def cell(row: list[str], name: str) -> str:  # as `_write` gave it (fileio.csv_cell)
        i = at.get(name)
        return fileio.read_cell(row[i].strip()) if i is not None and i < len(row) else ""

    return [_Row(line, cell(r, "path"), cell(r, "label"), cell(r, "action").lower(),
                 cell(r, "new_label")) for line, r in rows]


@dataclass
class _Dataset:
    source: Path  # DATA: a folder, or a labels CSV
    root: Path  # what the paths of actions.csv are relative to
    photos: PhotoSet
    by_real: dict[str, Photo]

    @property
    def is_csv(self) -> bool:
        return self.source.is_file()


def _current_dataset(run: RunFolder) -> _Dataset:
    run_dir = run.path
    source = _recorded_data(run)
    if not source.exists():
        raise RunError(f"The photos {run_dir} was trained on ({source}) are not there any "
                       "more; actions can only be applied to them where they were.")
    config = _run_config(run)
    try:
        photos = _read_data(source, config)
    except DataError as e:
        raise DataError(f"The run's photos cannot be read as a dataset any more, so no action "
                        f"was applied: {e}") from None
    by_real = {os.path.realpath(p.path): p for p in photos.photos}
    return _Dataset(source, _data_root(source), photos, by_real)


@dataclass
class _Plan:
    operations: list[dict] = field(default_factory=list)
    relabel_rows: dict[str, str] = field(default_factory=dict)  # real path -> new label (CSV)
    drop_rows: set[str] = field(default_factory=set)  # real paths whose CSV rows go
    relabelled: int = 0
    deleted: int = 0


# What to do when a relabel names a class (or label) the run does not know: clean moves photos
# among the classes the model was trained on; a new one needs photos labelled with it and a
# new run, which is the user's to start.
NEW_CLASS = ("clean relabels only to the run's classes: for a new class, put its photos in a "
             "class folder (or label them in the CSV) yourself and train a new run")
NEW_LABEL = ("clean relabels only to the run's labels: for a new label, add it to the photos "
             "in the labels CSV yourself and train a new run")


def _plan(rows: list[_Row], dataset: _Dataset, folder: Path, actions_csv: Path) -> _Plan:
    """Check every row and list the changes; one error naming the rows that cannot be
    applied, before anything changes."""
    class_ids = sorted({c for p in dataset.photos.photos for c in p.label_set}
                       | set(dataset.photos.class_ids))
    by_name = {n: c for c, n in zip(class_ids, display_names(class_ids))}
    multi = dataset.photos.task == "multi"
    joiner = _label_joiner(dataset.photos)
    problems, plan = [], _Plan()
    seen: dict[str, int] = {}
    destinations: dict[Path, int] = {}
    made: set[Path] = set()
    for row in rows:
        where = f"line {row.line}"
        if row.action not in ACTIONS:
            problems.append(f"{where}: the action {row.action or '(empty)'!r} is not one of "
                            f"{', '.join(ACTIONS)}")
            continue
        if row.action == KEEP:
            continue
        if not row.path:
            problems.append(f"{where}: no path")
            continue
        given = Path(row.path)
        real = os.path.realpath(given if given.is_absolute() else dataset.root / given)
        photo = dataset.by_real.get(real)
        if photo is None:
            gone = "no longer exists" if not os.path.lexists(real) else "is not one of its photos"
            problems.append(f"{where}: {row.path} {gone} in {dataset.source}")
            continue
        if real in seen:
            problems.append(f"{where}: {row.path} is changed on line {seen[real]} already")
            continue
        seen[real] = row.line
        if row.class_id and (_label_set(row.class_id, joiner, class_ids) != set(photo.labels)
                             if multi else row.class_id != photo.class_id):
            problems.append(f"{where}: {row.path} is labelled {photo.class_id!r} now, not "
                            f"{row.class_id!r}; run `clearclass clean` again for a current list")
            continue
        if row.action == RELABEL and multi:
            problem, cell = _new_label_cell(row, photo, joiner, class_ids, by_name)
            if problem:
                problems.append(f"{where}: {problem}")
                continue
            plan.relabel_rows[real] = cell
            plan.relabelled += 1
        elif row.action == RELABEL:
            new = (row.new_class_id if row.new_class_id in class_ids
                   else by_name.get(row.new_class_id))
            if new is None:
                problems.append(f"{where}: new_label {row.new_class_id or '(empty)'!r} is not a "
                                f"class of the run (e.g. {', '.join(class_ids[:3])}); {NEW_CLASS}")
                continue
            if new == photo.class_id:
                problems.append(f"{where}: relabel to {new!r}, the label it has")
                continue
            if dataset.is_csv:
                plan.relabel_rows[real] = new
            else:
                target = _relabelled_path(dataset, photo, new)
                if target is None:
                    problems.append(f"{where}: {row.path} is not in a class folder of "
                                    f"{dataset.source}")
                    continue
                problem = _claim(target, destinations, row.line, where)
                if problem:
                    problems.append(problem)
                    continue
                for parent in reversed(target.parents):
                    if parent not in made and not parent.exists() and \
                            parent.is_relative_to(dataset.root):
                        made.add(parent)
                        plan.operations.append({"op": "mkdir", "path": str(parent)})
                plan.operations.append({"op": "move", "from": str(photo.path),
                                        "to": str(target)})
            plan.relabelled += 1
        else:  # delete: moved aside, never deleted
            relative = Path(_relative_text(photo.path, dataset.root))
            if relative.is_absolute():
                relative = Path(*relative.parts[1:])
            target = folder / REMOVED / relative
            problem = _claim(target, destinations, row.line, where)
            if problem:
                problems.append(problem)
                continue
            plan.operations.append({"op": "move", "from": str(photo.path), "to": str(target)})
            if dataset.is_csv:
                plan.drop_rows.add(real)
            plan.deleted += 1
    if problems:
        raise DataError(f"{actions_csv}: {len(problems)} row(s) cannot be applied, so nothing "
                        f"was changed. " + "; ".join(problems[:3])
                        + ("; ..." if len(problems) > 3 else "") + ". Correct those rows (or "
                        "make their action keep) and apply the file again.")
    if plan.relabel_rows or plan.drop_rows:
        backup = folder / f"{dataset.source.name}.before-apply"
        plan.operations.append({"op": "rewrite", "path": str(dataset.source),
                                "backup": str(backup)})
    return plan


def _label_set(cell: str, joiner: str, class_ids: list[str]) -> set[str]:
    """A multi-label set as actions.csv writes it (`Cleaning.cell`): the labels joined by
    `joiner` (split on whitespace when it is a space), or `(none)` for no label, unless a
    label of the run is called that."""
    if cell.strip() == NO_LABELS and NO_LABELS not in class_ids:
        return set()
    return set(split_labels(cell, None if joiner == " " else joiner))


def _new_label_cell(row: _Row, photo: Photo, joiner: str, class_ids: list[str],
                    by_name: dict[str, str]) -> tuple[str, str]:
    """A multi-label relabel row's new set as DATA's label cell; or why it cannot be."""
    shown = "spaces" if joiner == " " else repr(joiner)
    if not row.new_class_id.strip():
        return (f"new_label is empty: give {row.path}'s new labels, all of them, separated by "
                f"{shown} as in the labels CSV, or {NO_LABELS} for no label"), ""
    given = _label_set(row.new_class_id, joiner, class_ids)
    new = {c if c in class_ids else by_name.get(c) for c in given}
    unknown = sorted(c for c in given if c not in class_ids and c not in by_name)
    if unknown:
        return (f"new_label {unknown[0]!r} is not a label of the run (e.g. "
                f"{', '.join(class_ids[:3])}); labels are separated by {shown}; "
                f"{NEW_LABEL}"), ""
    if new == set(photo.labels):
        return f"relabel to {label_text(photo.labels)!r}, the labels it has", ""
    return "", joiner.join(sorted(new))


def _claim(target: Path, destinations: dict[Path, int], line: int, where: str) -> str:
    if os.path.lexists(target):
        return f"{where}: {target} exists already (a name clash); rename one of the two"
    if target in destinations:
        return f"{where}: line {destinations[target]} moves a photo to {target} too"
    destinations[target] = line
    return ""


def _relabelled_path(dataset: _Dataset, photo: Photo, new_class_id: str) -> Path | None:
    """Where a photo goes in the class folder of `new_class_id`, in the same split folder."""
    root = dataset.photos.root
    try:
        relative = photo.path.relative_to(root)
    except ValueError:
        return None
    depth = 2 if dataset.photos.layout.startswith("split folders") else 1
    if len(relative.parts) <= depth or relative.parts[depth - 1] != photo.class_id:
        return None
    return root.joinpath(*relative.parts[:depth - 1], new_class_id, *relative.parts[depth:])


def _execute(plan: _Plan, log_path: Path, dataset: _Dataset, actions_csv: Path,
             steps: _Steps) -> None:
    """Log every change, then make them; the log is written before the first change, so
    whatever moment this stops at, `undo` finds what to reverse.

    Each change can be stopped half-way and `undo` still finds the photo: a move to
    another file system copies under a temporary name, renames, then deletes the source
    (`fileio.move_file`), and the labels table is replaced by a rename (`_replace`) once
    its backup is written. Ctrl-C stops between two changes (`steps`)."""
    rewrite = next((op for op in plan.operations if op["op"] == "rewrite"), None)
    new_table = original = None
    if rewrite is not None:
        original = dataset.source.read_bytes()
        new_table = _edited_table(dataset.source, original, plan.relabel_rows, plan.drop_rows)
        rewrite.update(before=_sha256(original), after=_sha256(new_table),
                       mode=dataset.source.stat().st_mode & 0o7777)
    log = {"format": "clearclass clean log", "version": 1, "data": str(dataset.source),
           "actions": str(actions_csv.resolve()),
           "applied": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": False,
           "operations": plan.operations}
    steps.check()
    fileio.write_json(log_path, log)
    steps.logged = True
    if rewrite is not None:  # `undo` needs it only once the table is edited, the last change
        fileio.write_bytes(Path(rewrite["backup"]), original)
    for op in plan.operations:
        steps.check()
        if op["op"] == "mkdir":
            Path(op["path"]).mkdir()
        elif op["op"] == "move":
            target = Path(op["to"])
            target.parent.mkdir(parents=True, exist_ok=True)
            fileio.move_file(op["from"], target)
            steps.done += 1
        elif op["op"] == "rewrite":
            _replace(Path(op["path"]), new_table, op["mode"])
            steps.edited = True
    fileio.write_json(log_path, {**log, "complete": True})


def _replace(path: Path, data: bytes, mode: int) -> None:
    """`path` holds `data` with `mode`: written whole under `fileio.staged_path(path)`, then
    renamed over it (a stop leaves the old table, or the new one, and at most that copy)."""
    staged = fileio.staged_path(path)
    staged.unlink(missing_ok=True)
    with open(staged, "wb") as f:
        f.write(data)
        f.flush()
        os.chmod(staged, mode)
        os.fsync(f.fileno())
    os.replace(staged, path)


def _same_content(a: Path, b: Path) -> bool:
    """Whether two files (or links) hold the same bytes: size, then SHA-256."""
    if os.path.islink(a) or os.path.islink(b):
        return os.path.islink(a) and os.path.islink(b) and os.readlink(a) == os.readlink(b)
    if not (a.is_file() and b.is_file()) or a.stat().st_size != b.stat().st_size:
        return False
    return sha256(a) == sha256(b)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Byte-order marks and the codecs that read what follows them (UTF-32 before UTF-16: the
# UTF-32 LE mark starts with the UTF-16 LE one).
_MARKS = {"utf-32": {b"\xff\xfe\x00\x00": "utf-32-le", b"\x00\x00\xfe\xff": "utf-32-be"},
          "utf-16": {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"},
          "utf-8-sig": {b"\xef\xbb\xbf": "utf-8"}}


def _text_encoding(data: bytes) -> tuple[bytes, str]:
    """A labels table's byte-order mark and the codec of the rest, as `find_photos` reads it."""
    for mark, name in BOMS:
        if data.startswith(mark):
            return mark, _MARKS[name][mark]
    if b"\0" in data:
        return b"", utf16_without_bom(data) or "utf-8"
    try:
        data.decode("utf-8")
        return b"", "utf-8"
    except UnicodeDecodeError:
        return b"", "cp1252"


def _edited_table(csv_path: Path, data: bytes, relabel: dict[str, str],
                  drop: set[str]) -> bytes:
    """The labels table with the rows of `relabel` given their new label and those of `drop`
    left out; every other line as it was, in the same encoding, delimiter and line ends."""
    mark, codec = _text_encoding(data)
    text = data[len(mark):].decode(codec)
    delimiter = sniff_delimiter(text)
    lines = list(io.StringIO(text, newline=""))
    reader = csv.reader(iter(lines), delimiter=delimiter)
    out, header, at, start = [], None, {}, 0
    for row in reader:
        end = reader.line_num
        original = lines[start:end]
        start = end
        if header is None:
            if any(cell.strip() for cell in row):
                header = [column_name(c) for c in row]
                at = {c: header.index(c) for c in ("path", "label")}
            out += original
            continue
        rel = row[at["path"]].strip() if at["path"] < len(row) else ""
        real = os.path.realpath(listed_file(csv_path.parent, rel)[0]) if rel else ""
        if real in drop:
            continue
        if real in relabel and at["label"] < len(row):
            row[at["label"]] = fileio.csv_cell(relabel[real])
            ending = original[-1][len(original[-1].rstrip("\r\n")):]
            buffer = io.StringIO()
            csv.writer(buffer, delimiter=delimiter, lineterminator=ending).writerow(row)
            out.append(buffer.getvalue())
            continue
        out += original
    out += lines[start:]
    return mark + "".join(out).encode(codec)


# --- undoing ---------------------------------------------------------------------------------

def _undo_problem(op: dict) -> str:
    """Why `op` cannot be reversed (or found already reversed, or never made), "" if it can."""
    kind = op.get("op")
    if kind == "move":
        source, target = Path(op["from"]), Path(op["to"])
        here, there = os.path.lexists(source), os.path.lexists(target)
        if here and there and not _same_content(source, target):
            # A move stopped between its copy and its delete leaves two identical files.
            return (f"{source} and {target}, where the apply moved it, both exist and differ; "
                    f"keep the one you want at {source}, delete the other")
        if not here and not there:
            return f"{source} was moved to {target}, which is gone"
        return ""
    if kind == "rewrite":
        path = Path(op["path"])
        if "after" not in op:  # the apply stopped before it
            return ""
        current = _sha256(path.read_bytes()) if path.is_file() else ""
        if current not in (op["before"], op["after"]):
            return f"{path} was edited since; its content before the apply is in {op['backup']}"
        if current == op["after"] and not Path(op["backup"]).is_file():
            return f"{op['backup']}, {path} before the apply, is gone"
        return ""
    if kind == "mkdir":
        return ""
    return f"an unknown change {kind!r}"


def _reverse(op: dict) -> int:
    """Reverse one change, from whatever point it (or an undo of it) was stopped at; 1 if
    it had been made, else 0. `_undo_problem(op)` must be "" first."""
    kind = op["op"]
    if kind == "move":
        source, target = Path(op["from"]), Path(op["to"])
        made = os.path.lexists(target)
        if made and not os.path.lexists(source):
            source.parent.mkdir(parents=True, exist_ok=True)
            fileio.move_file(target, source)
        # The photo is whole at `source` now: what else is left of the move is a copy of it
        # (checked identical by `_undo_problem`), or part of one under a temporary name.
        for copy in (fileio.staged_path(target), fileio.staged_path(source)):
            if os.path.lexists(copy):
                os.unlink(copy)
        if os.path.lexists(target):
            os.unlink(target)
        return int(made)
    if kind == "rewrite":
        path = Path(op["path"])
        fileio.staged_path(path).unlink(missing_ok=True)  # part of a table never renamed
        if "after" not in op or _sha256(path.read_bytes()) != op["after"]:
            return 0
        _replace(path, Path(op["backup"]).read_bytes(), op["mode"])
        return 1
    folder = Path(op["path"])  # mkdir
    if not folder.is_dir():
        return 0
    if any(folder.iterdir()):
        warn(f"{folder} was made by the apply but holds files now; it is left in place.")
        return 0
    folder.rmdir()
    return 1


def _tidy(folder: Path, operations: list[dict]) -> None:
    """What an apply leaves in RUN/clean besides the log: the labels table's backup, the
    folders of removed/ once empty, and temp files of writes that a killed process left."""
    for op in operations:
        if op["op"] == "rewrite":
            Path(op["backup"]).unlink(missing_ok=True)
            for stray in fileio.stray_temp_files(op["backup"]):
                stray.unlink(missing_ok=True)
    for stray in fileio.stray_temp_files(folder / LOG_FILE):
        stray.unlink(missing_ok=True)
    _remove_empty_folders(folder / REMOVED)


def _remove_empty_folders(top: Path) -> None:
    if not top.is_dir():
        return
    for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            os.rmdir(folder)
