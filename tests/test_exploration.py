"""explore: the warning about imbalanced classes (issue 23)."""

from __future__ import annotations

import pytest

import clearclass
from clearclass.data.checks import IMBALANCE_RATIO
from tests.conftest import make_photo, run_cli


def _dataset(root, counts: dict[str, int]):
    for i, (name, count) in enumerate(counts.items()):
        for k in range(count):
            make_photo(root / name / f"{k}.png", colour=(40 * i, 200 - 40 * i, 90), seed=k)
    return root


@pytest.mark.parametrize(("counts", "warned"), [
    ({"many": 30, "few": 10}, False),  # 24 training photos to 8: exactly 3 times
    ({"many": 60, "few": 10}, True),
    ({"a": 12, "b": 10, "c": 9}, False),
])
def test_the_largest_class_over_three_times_the_smallest_is_warned_about(
        tmp_path, counts, warned):
    found = clearclass.explore(_dataset(tmp_path / "d", counts), item_resize=32, workers=0)
    train = {name: t for name, (t, _) in found.counts().items()}
    ratio = max(train.values()) / min(train.values())
    assert (ratio > IMBALANCE_RATIO) == warned  # the case is what it claims to be
    message = found.imbalance()
    assert (message is not None) == warned
    if warned:
        assert "many" in message and "few" in message and f"{ratio:.1f} times" in message
        assert "--balance weights" in message and "--balance sampler" in message  # the remedy
        assert "imbalanced" in found._repr_html_()


def test_the_command_line_says_so_and_names_are_shown_as_text(tmp_path):
    data = _dataset(tmp_path / "d", {"<img src=x>big": 60, "small": 10})
    result = run_cli("explore", data, "--item-resize", "32", "--workers", "0")
    assert result.returncode == 0, result.stderr
    said = " ".join((result.stdout + result.stderr).split())  # as the terminal wraps it
    assert "The classes are imbalanced: <img src=x>big has 48 training photos" in said
    html = clearclass.explore(data, item_resize=32, workers=0)._repr_html_()
    assert "&lt;img src=x&gt;big has" in html and "<img src=x>big" not in html


def test_a_class_without_readable_training_photos_is_not_an_imbalance_to_divide_by(tmp_path):
    data = _dataset(tmp_path / "d", {"many": 40, "broken": 0})
    (data / "broken").mkdir()
    for k in range(5):  # files that are not images: unreadable, so no training photo
        (data / "broken" / f"{k}.png").write_bytes(b"not an image")
    found = clearclass.explore(data, item_resize=32, workers=0)
    assert found.counts()["broken"][0] == 0 and found.imbalance() is None


# --- a multi-label CSV (issue 25) -------------------------------------------------------------

def test_a_multi_label_csv_is_explored_label_by_label(multi_label_photos, tmp_path):
    # Every subset of red, green and blue on 6 photos: each label on 24 photos, each pair
    # on 12, and 6 photos with none, 18 with one, 18 with two, 6 with three.
    found = clearclass.explore(multi_label_photos, out=tmp_path / "out", item_resize=32,
                               workers=0)
    assert found.is_multi_label
    assert {name: sum(c) for name, c in found.counts().items()} == {
        "blue": 24, "green": 24, "red": 24}
    assert sum(t for t, _ in found.counts().values()) > len(found.photo_set.train)  # sets
    assert found.labels_per_photo() == {0: 6, 1: 18, 2: 18, 3: 6}
    matrix = found.cooccurrence()
    assert matrix.tolist() == [[24, 12, 12], [12, 24, 12], [12, 12, 24]]
    pairs = found.top_pairs()
    assert len(pairs) == 3 and all(p.photos == 12 and p.share == 0.5 for p in pairs)
    assert {frozenset((p.first, p.second)) for p in pairs} == {
        frozenset(("blue", "green")), frozenset(("blue", "red")), frozenset(("green", "red"))}
    # One row of samples per label, then the photos with none.
    assert [name for name, _ in found.samples] == ["blue", "green", "red", "(no label)"]
    assert all(len(thumbs) == 6 for _, thumbs in found.samples)
    assert (tmp_path / "out" / "cooccurrence.png").is_file()
    assert found.imbalance() is None  # each label on as many photos
    html = found._repr_html_()
    assert "3 labels" in html and "Labels that occur together" in html
    assert "Labels per photo: 6 photos with 0 labels, 18 with 1" in repr(found)


def test_batch_titles_show_each_photos_label_set(multi_label_photos):
    figure = clearclass.show_batch(multi_label_photos, n=16, item_resize=32)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert len(titles) == 16
    assert any("; " in t for t in titles) and "(none)" in titles
    parts = {part for t in titles if t != "(none)" for part in t.split("; ")}
    assert parts <= {"red", "green", "blue"}


def test_explore_reads_the_labels_with_the_task_and_delimiter_given(tmp_path):
    from tests.conftest import make_multi_label_dataset

    spaced = make_multi_label_dataset(tmp_path / "spaced", per_set=3, delimiter=" ")
    # Every word of the spaced cells is a label alone elsewhere: auto reads the cells as
    # sets (fastai's label_delim=' '); ';' keeps 'blue green' as one label.
    assert set(clearclass.explore(spaced, item_resize=32).counts()) == {"red", "green", "blue"}
    assert "blue green" in clearclass.explore(spaced, item_resize=32,
                                              label_delimiter=";").counts()
    found = clearclass.explore(spaced, item_resize=32, label_delimiter=" ")
    assert set(found.counts()) == {"red", "green", "blue"}
    figure = clearclass.show_batch(spaced, n=4, item_resize=32, label_delimiter=" ")
    assert not any("blue green" in ax.get_title() for ax in figure.axes)
    # Sets without an empty one are multi-label by 'dog;cat' alone; task single reads each
    # cell as one class.
    sets = (("red",), ("blue",), ("blue", "red"))
    csv = make_multi_label_dataset(tmp_path / "sets", per_set=4, sets=sets)
    assert clearclass.explore(csv, item_resize=32).is_multi_label
    single = clearclass.explore(csv, item_resize=32, task="single")
    assert not single.is_multi_label and "blue;red" in single.counts()


def test_a_rare_label_is_warned_about_with_its_photos_with_and_without(tmp_path):
    from tests.conftest import make_multi_label_dataset

    sets = (("red",),) * 10 + (("red", "blue"),) + ((),) * 4
    csv = make_multi_label_dataset(tmp_path / "rare", per_set=4, sets=sets)
    found = clearclass.explore(csv, item_resize=32, workers=0)
    train = {name: t for name, (t, _) in found.counts().items()}
    message = found.imbalance()
    assert message is not None and train["red"] > 3 * train["blue"]
    n = len(found.photo_set.train)
    assert f"blue on {train['blue']} of {n} ({n - train['blue']} without it)" in message
    assert "--balance" in message  # which does not apply: said
    result = run_cli("explore", csv, "--item-resize", "32", "--workers", "0",
                     "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert "The labels are imbalanced: red is on" in said
    assert "Labels per photo (readable photos): 16 photos with 0 labels" in said
    assert "red + blue: 4 photos (100% of those with blue)" in said  # the rarer second
    assert (tmp_path / "out" / "cooccurrence.png").is_file()


def test_label_pairs_are_counted_past_255_photos():
    # PhotoSet.targets keeps multi-hot rows as uint8: the counts must not wrap around.
    from pathlib import Path

    from clearclass.data.sources import PhotoSet, multi_label_photo
    from clearclass.exploration import Exploration
    from clearclass.training.config import make_config

    photos = [multi_label_photo(Path(f"{i}.jpg"), ("a", "b") if i < 300 else ("c",), i % 5 == 0)
              for i in range(320)]
    found = Exploration(PhotoSet(photos, ["a", "b", "c"], "CSV", Path("."), task="multi"),
                        {p.path: (48, 40) for p in photos}, [], make_config("labels.csv", {}))
    assert found.cooccurrence().tolist() == [[300, 300, 0], [300, 300, 0], [0, 0, 20]]
    assert found.top_pairs()[0].photos == 300 and found.labels_per_photo() == {0: 0, 1: 20,
                                                                               2: 300}
