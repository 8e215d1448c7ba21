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


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_links_that_would_count_photos_twice_are_reported(tmp_path, capsys):
    root = tmp_path / "d"
    for i, name in enumerate(("beagle", "pug")):
        _write(root / name / "a.jpg", photo(10 + i))
    elsewhere = _write(tmp_path / "mnt" / "hound" / "a.jpg", photo(12)).parent
    (root / "all").symlink_to(".")  # back to DIR: every photo again, as 'all'
    (root / "beagle" / "up").symlink_to("../..")  # above DIR
    (root / "pug" / "more").symlink_to("../beagle")  # another folder of DIR
    (root / "hound").symlink_to(elsewhere)  # a class kept elsewhere: checked as usual
    (root / "hound2").symlink_to(elsewhere)  # ... but only once
    (root / "pug" / "b.jpg").symlink_to(root / "beagle" / "a.jpg")  # a linked copy
    report = verify(root)
    found = {p.path.relative_to(root).as_posix(): (p.kind, p.removable)
             for p in report.problems}
    assert found == {
        "all": ("linked folder", False),
        "beagle/up": ("linked folder", False),
        "pug/more": ("linked folder", False),
        "hound2": ("linked folder", False),
        "pug/b.jpg": ("duplicate across classes", True),
    }
    assert report.checked == 3  # beagle/a.jpg, hound/a.jpg, pug/a.jpg
    details = {p.path.name: p.detail for p in report.problems}
    assert details["all"].startswith("a link back to this folder itself")
    assert "checked already as hound/" in details["hound2"]
    assert details["b.jpg"] == "a link to beagle/a.jpg (the same file)"
    out = " ".join(capsys.readouterr().out.split())
    assert "linked folder" in out and "remove the link" in out

    # --delete takes away the linked copy (the link, never the photo) and leaves folders.
    verify(root, delete=True)
    assert not (root / "pug" / "b.jpg").is_symlink() and (root / "beagle" / "a.jpg").is_file()
    assert (root / "all").is_symlink() and (elsewhere / "a.jpg").is_file()


def test_a_linked_copy_is_taken_away_not_the_file_it_leads_to(tmp_path):
    root = tmp_path / "d"
    real = _write(root / "pug" / "z.jpg", photo(20))
    (root / "beagle").mkdir()
    (root / "beagle" / "a.jpg").symlink_to(real)  # first in path order, but a link
    report = verify(root, delete=True)
    assert [p.path for p in report.problems] == [root / "beagle" / "a.jpg"]
    assert real.is_file() and not (root / "beagle" / "a.jpg").exists()
