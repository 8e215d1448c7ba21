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
