from __future__ import annotations

import csv
from pathlib import Path

import pytest

from clearclass.acquire.manifest import COLUMNS
from clearclass.acquire.verify import verify
from clearclass.errors import AcquireError
from tests.acquire.conftest import CORRUPT, near_copy, photo


def _dataset(root: Path) -> dict[str, Path]:
    """Every kind of problem once, in two classes."""
    original = photo(1)
    files = {
        "good": ("beagle/a_good.jpg", original),
        "copy": ("beagle/b_copy.jpg", original),
        "near": ("beagle/c_near.jpg", near_copy(original)),
        "across": ("pug/d_across.jpg", original),
        "corrupt": ("beagle/e_corrupt.jpg", CORRUPT),
        "truncated": ("beagle/f_truncated.jpg", photo(2, size=(300, 200))[:1200]),
        "png": ("pug/g_png.jpg", photo(3, fmt="PNG")),
        "tiny": ("pug/h_tiny.jpg", photo(4, size=(50, 40))),
        "fine": ("pug/i_fine.jpg", photo(5)),
    }
    paths = {}
    for name, (rel, data) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[name] = path
    (root / "notes.txt").write_text("not a photo")
    return paths


def test_every_kind_of_problem_is_found_and_shown(tmp_path, capsys):
    paths = _dataset(tmp_path / "d")
    report = verify(tmp_path / "d")
    found = {p.path: (p.kind, p.other) for p in report.problems}
    assert found == {
        paths["copy"]: ("duplicate", paths["good"]),
        paths["near"]: ("near duplicate", paths["good"]),
        paths["across"]: ("duplicate across classes", paths["good"]),
        paths["corrupt"]: ("unreadable", None),
        paths["truncated"]: ("truncated", None),
        paths["png"]: ("wrong extension", None),
        paths["tiny"]: ("too small", None),
    }
    assert report.checked == 9 and not report.actions
    assert all(p.is_file() for p in paths.values())  # nothing touched without being asked
    out = " ".join(capsys.readouterr().out.split())
    assert "9 photos checked" in out and "beagle/b_copy.jpg" in out
    assert "identical to" in out and "the content is PNG" in out
    assert "--delete" in out and "--fix-extensions" in out


def test_delete_removes_the_bad_files_and_keeps_first_copies(tmp_path):
    paths = _dataset(tmp_path / "d")
    report = verify(tmp_path / "d", delete=True)
    gone = {"copy", "near", "across", "corrupt", "truncated", "tiny"}
    for name, path in paths.items():
        assert path.exists() == (name not in gone), name
    assert set(report.actions) == {paths[n] for n in gone}
    assert verify(tmp_path / "d").counts() == {"wrong extension": 1}


def test_move_to_keeps_class_folders_and_fix_extensions_renames(tmp_path):
    paths = _dataset(tmp_path / "d")
    verify(tmp_path / "d", move_to=tmp_path / "rejected", fix_extensions=True)
    assert (tmp_path / "rejected" / "pug" / "h_tiny.jpg").is_file()
    assert (tmp_path / "rejected" / "beagle" / "e_corrupt.jpg").is_file()
    assert not paths["png"].exists() and (tmp_path / "d" / "pug" / "g_png.png").is_file()
    assert verify(tmp_path / "d").ok


def test_a_copy_in_train_and_valid_is_a_leak(tmp_path):
    data = photo(9)
    for split in ("train", "valid"):
        (tmp_path / split / "beagle").mkdir(parents=True)
        (tmp_path / split / "beagle" / "x.jpg").write_bytes(data)
        (tmp_path / split / "pug").mkdir(parents=True)
        (tmp_path / split / "pug" / f"{split}.jpg").write_bytes(photo(10 if split == "train"
                                                                       else 11))
    (problem,) = verify(tmp_path).problems
    assert problem.kind == "duplicate across splits"
    assert problem.path == tmp_path / "valid" / "beagle" / "x.jpg"


def test_the_manifest_follows_deletions_and_renames(tmp_path):
    paths = _dataset(tmp_path / "d")
    with open(tmp_path / "d" / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for path in paths.values():
            rel = path.relative_to(tmp_path / "d").as_posix()
            writer.writerow([rel, path.parent.name, f"https://x.example/{path.name}", "pexels",
                             "", "", "", "", 0, 0, "", ""])
    verify(tmp_path / "d", delete=True, fix_extensions=True)
    with open(tmp_path / "d" / "manifest.csv", newline="", encoding="utf-8") as f:
        files = [row["file"] for row in csv.DictReader(f)]
    assert files == ["beagle/a_good.jpg", "pug/g_png.png", "pug/i_fine.jpg"]


def test_wrong_use_is_explained(tmp_path):
    _dataset(tmp_path / "d")
    with pytest.raises(AcquireError, match="either --delete or --move-to"):
        verify(tmp_path / "d", delete=True, move_to=tmp_path / "x")
    with pytest.raises(AcquireError, match="inside"):
        verify(tmp_path / "d", move_to=tmp_path / "d" / "rejected")
    with pytest.raises(AcquireError, match="not a folder"):
        verify(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AcquireError, match="No photos found"):
        verify(tmp_path / "empty")
