from __future__ import annotations

import os
from pathlib import Path

import pytest

from clearclass.data.sources import display_name, display_names, find_photos
from clearclass.errors import DataError
from tests.conftest import make_dataset, make_photo


def test_display_names_strip_wordnet_ids_and_underscores():
    assert display_name("n02085620-Chihuahua") == "Chihuahua"
    assert display_name("golden_retriever") == "golden retriever"
    assert display_name("n02099601-golden_retriever") == "golden retriever"
    assert display_name("Beagle") == "Beagle"
    # Two ids that would read the same keep their ids.
    assert display_names(["a_b", "a b"]) == ["a_b", "a b"]


def test_class_folders_split_stratified_and_repeatable(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=10)
    first = find_photos(root, validation_fraction=0.2, seed=42)
    assert first.class_ids == ["blue", "green", "red"]
    assert first.layout == "class folders"
    assert first.counts() == {"blue": (8, 2), "green": (8, 2), "red": (8, 2)}
    again = find_photos(root, validation_fraction=0.2, seed=42)
    assert [p.path for p in again.valid] == [p.path for p in first.valid]
    other = find_photos(root, validation_fraction=0.2, seed=7)
    assert {p.path for p in other.valid} != {p.path for p in first.valid}


def test_every_class_gets_a_validation_photo_even_when_small(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    photos = find_photos(root, validation_fraction=0.1)
    assert all(valid == 1 for _, valid in photos.counts().values())


def test_train_and_valid_folders_are_used_as_given(tmp_path):
    make_dataset(tmp_path / "d" / "train", per_class=4)
    make_dataset(tmp_path / "d" / "val", per_class=2)
    photos = find_photos(tmp_path / "d")
    assert photos.counts() == {"blue": (4, 2), "green": (4, 2), "red": (4, 2)}
    assert "train/" in photos.layout and "val/" in photos.layout


def test_stanford_dogs_images_folder_is_found(tmp_path):
    make_dataset(tmp_path / "stanford" / "Images", per_class=3,
                 classes=("n02085620-Chihuahua", "n02085782-Japanese_spaniel"))
    (tmp_path / "stanford" / "Annotation").mkdir()
    photos = find_photos(tmp_path / "stanford")
    assert photos.class_ids == ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    assert photos.display_names == ["Chihuahua", "Japanese spaniel"]
    assert any("Stanford Dogs" in n for n in photos.notes)


def test_csv_with_and_without_is_valid(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=5)
    rows = [f"{p.relative_to(root)},{p.parent.name}" for p in sorted(root.rglob("*.jpg"))]
    (root / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    photos = find_photos(root / "labels.csv", validation_fraction=0.2)
    assert photos.layout == "CSV"
    assert photos.counts() == {"blue": (4, 1), "green": (4, 1), "red": (4, 1)}

    split_rows = [f"{r},{'True' if i % 5 == 0 else 'False'}" for i, r in enumerate(rows)]
    (root / "split.csv").write_text("path,label,is_valid\n" + "\n".join(split_rows) + "\n")
    photos = find_photos(root / "split.csv")
    assert photos.layout == "CSV with is_valid column"
    assert len(photos.valid) == 3


def test_csv_errors_name_the_problem(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=2)
    (root / "bad.csv").write_text("file,class\nx.jpg,red\n")
    with pytest.raises(DataError, match="path,label"):
        find_photos(root / "bad.csv")
    (root / "missing.csv").write_text("path,label\nred/000.jpg,red\nnope.jpg,blue\n")
    with pytest.raises(DataError, match="do not exist.*nope.jpg"):
        find_photos(root / "missing.csv")
    (root / "flag.csv").write_text("path,label,is_valid\nred/000.jpg,red,maybe\n")
    with pytest.raises(DataError, match="line 2.*is_valid"):
        find_photos(root / "flag.csv")


def test_single_class_is_a_clear_error(tmp_path):
    make_dataset(tmp_path / "d", per_class=3, classes=("pug",))
    with pytest.raises(DataError, match="only class 'pug'.*at least 2"):
        find_photos(tmp_path / "d")


def test_empty_class_folder_is_named(tmp_path):
    make_dataset(tmp_path / "d", per_class=3, classes=("pug", "beagle"))
    (tmp_path / "d" / "dingo").mkdir()
    with pytest.raises(DataError, match=r"dingo holds no images"):
        find_photos(tmp_path / "d")


def test_loose_photos_get_a_layout_hint(tmp_path):
    for i in range(3):
        make_photo(tmp_path / "d" / f"{i}.jpg")
    with pytest.raises(DataError, match="own subfolder"):
        find_photos(tmp_path / "d")


def test_missing_path_and_non_csv_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_photos(tmp_path / "nowhere")
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(DataError, match="not a CSV"):
        find_photos(tmp_path / "notes.md")
    # Excel saves its "Unicode text" as .txt: read as a table, which this one is not.
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="must have a header with columns path,label"):
        find_photos(tmp_path / "notes.txt")


def test_hidden_files_and_other_files_are_ignored(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3, classes=("a", "b"))
    (root / "a" / "notes.txt").write_text("not a photo")
    (root / "a" / ".DS_Store").write_bytes(b"\0")
    (root / ".cache").mkdir()
    photos = find_photos(root)
    assert photos.class_ids == ["a", "b"]
    assert len(photos.photos) == 6


def test_unicode_file_names(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=2, classes=("chien", "chat"))
    make_photo(root / "chien" / "très_joli_犬.jpg")
    photos = find_photos(root)
    assert any(p.path.name == "très_joli_犬.jpg" for p in photos.photos)


def test_without_drops_unreadable_and_rejects_emptied_class(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=2, classes=("a", "b"))
    photos = find_photos(root)
    one = {photos.photos[0].path}
    assert len(photos.without(one).photos) == 3
    every_a = {p.path for p in photos.photos if p.class_id == "a"}
    with pytest.raises(DataError, match=r"Class 'a' has no readable image.*" + str(Path("d", "a"))):
        photos.without(every_a)


def _labels(root: Path) -> list[tuple[str, str]]:
    return [(p.relative_to(root).as_posix(), p.parent.name) for p in sorted(root.rglob("*.jpg"))]


@pytest.mark.parametrize(("name", "encoding", "delimiter"), [
    ("unicode-text.txt", "utf-16", "\t"),  # Excel's "Unicode text": UTF-16 LE with BOM, tabs
    ("utf16be.csv", "utf-16-be", ","),  # no BOM
    ("utf16le.csv", "utf-16-le", "\t"),  # no BOM
    ("bom.csv", "utf-8-sig", ","),  # Excel's "CSV UTF-8"
    ("europe.csv", "cp1252", ";"),  # Excel's "CSV (Comma delimited)" where ',' is a decimal
    ("utf32.tsv", "utf-32", "\t"),
])
def test_csv_as_spreadsheets_save_it(tmp_path, name, encoding, delimiter):
    root = make_dataset(tmp_path / "d", per_class=4)
    make_photo(root / "red" / "café ß.jpg", (200, 40, 40))
    rows = _labels(root)
    lines = [delimiter.join(["Path ", " LABEL", "Is Valid"])] + [
        delimiter.join([rel, label, "1" if i % 4 == 0 else "0"]) for i, (rel, label) in
        enumerate(rows)]
    (root / name).write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    photos = find_photos(root / name)
    assert sorted(p.path for p in photos.photos) == sorted((root / r).resolve() for r, _ in rows)
    assert photos.class_ids == ["blue", "green", "red"]
    assert len(photos.valid) == 4


def test_csv_that_is_not_text_says_save_as_csv_utf8(tmp_path):
    png = make_photo(tmp_path / "p.png").read_bytes()
    for name, data in [("image.csv", png), ("workbook.csv", b"PK\x03\x04\x14\x00\x06\x00"),
                       ("controls.csv", b"path,label\n\x01\x02\x03,x\n"),
                       ("undecodable.csv", b"path,label\nx\x81\x8d.jpg,x\n")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=r'^\S+ is not .*Save it as "CSV UTF-8"'):
            find_photos(tmp_path / name)


def test_csv_rows_that_cannot_be_used_are_named(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=2)
    cases = {
        "header.csv": ("path,label\n\n", "lists no photos: it has a header but no rows"),
        "empty.csv": ("", "must have a header with columns path,label.*found no header"),
        "labels.csv": ("path,label\nred/000.jpg,\nred/001.jpg, \n",
                       "2 row.s. have an empty label .the first on line 2"),
        "folders.csv": ("path,label\nred,red\nblue,blue\n", "are folders, not photos, e.g. red"),
        "fields.csv": ("path,label\nred/000.jpg,red,extra\n",
                       "line 2: 3 fields where the header has 2"),
        "twice.csv": ("path,label,Label\nred/000.jpg,red,red\n", "2 columns named label"),
        "quotes.csv": ('path,label\n"red/000.jpg,red\n', "have an empty label"),
        "newline.csv": ('path,label\n"red/\n000.jpg",red\n', r"e\.g\. red/\\n000\.jpg"),
    }
    for name, (text, message) in cases.items():
        (root / name).write_text(text)
        with pytest.raises(DataError, match=message) as caught:
            find_photos(root / name)
        assert "\n" not in str(caught.value)


def test_csv_paths_blank_lines_backslashes_and_absolute_paths(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    rows = _labels(root)
    text = "\n\npath,label\n\n" + "".join(
        f"{rel.replace('/', chr(92)) if i % 2 else str(root / rel)},{label}\n"
        for i, (rel, label) in enumerate(rows))
    (root / "mixed.csv").write_text(text)
    assert len(find_photos(root / "mixed.csv").photos) == 9


def test_csv_duplicate_rows(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    rows = "".join(f"{rel},{label}\n" for rel, label in _labels(root))
    (root / "same.csv").write_text(f"path,label\n{rows}blue/000.jpg,blue\n./blue/000.jpg,blue\n")
    photos = find_photos(root / "same.csv")
    assert len(photos.photos) == 9
    assert any("2 photo(s) were found twice with the same label" in n for n in photos.notes)

    (root / "two.csv").write_text(f"path,label\n{rows}red/../blue/000.jpg,red\n")
    with pytest.raises(DataError, match=r"line 2 \(blue/000.jpg\) and line 11 \(red/../blue/000"
                                        r".jpg\) are the same photo with two labels, 'blue' and "
                                        r"'red'.*Delete one of the two rows"):
        find_photos(root / "two.csv")

    split = "".join(f"{rel},{label},{i % 3 == 0}\n" for i, (rel, label) in enumerate(_labels(root)))
    (root / "leak.csv").write_text(f"path,label,is_valid\n{split}blue/000.jpg,blue,False\n")
    with pytest.raises(DataError, match="once for training and once for validation"):
        find_photos(root / "leak.csv")


def test_no_validation_photo_is_an_error_before_training(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    rows = "".join(f"{rel},{label},False\n" for rel, label in _labels(root))
    (root / "all_false.csv").write_text("path,label,is_valid\n" + rows)
    with pytest.raises(DataError, match="is_valid is False on every row.*delete the is_valid"):
        find_photos(root / "all_false.csv")

    make_dataset(tmp_path / "split" / "train", per_class=3)
    make_dataset(tmp_path / "split" / "valid", per_class=2, classes=("purple",))
    with pytest.raises(DataError, match=r"valid holds no photo of a class in train/"):
        find_photos(tmp_path / "split")

    make_dataset(tmp_path / "tiny", per_class=1)
    with pytest.raises(DataError, match="single photo, so none can be held out"):
        find_photos(tmp_path / "tiny")
    (tmp_path / "tiny.csv").write_text("path,label\ntiny/red/000.jpg,red\ntiny/blue/000.jpg,blue\n")
    with pytest.raises(DataError, match="single photo, so none can be held out"):
        find_photos(tmp_path / "tiny.csv")


def test_without_rejects_a_set_left_with_no_validation_or_training_photo(tmp_path):
    photos = find_photos(make_dataset(tmp_path / "d", per_class=3, classes=("a", "b")))
    with pytest.raises(DataError, match=r"None of the 2 validation photos could be decoded"):
        photos.without({p.path for p in photos.valid})
    with pytest.raises(DataError, match=r"Class 'a' has no readable training photo"):
        photos.without({p.path for p in photos.train if p.class_id == "a"})


def test_a_class_folder_linked_back_to_data_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    for target in (".", "..", str(root)):
        (root / "all").symlink_to(target)
        with pytest.raises(DataError, match=r"all is a link .*every photo would be counted "
                                            "again.*Remove the link"):
            find_photos(root)
        (root / "all").unlink()
    (root / "red" / "up").symlink_to("..")  # deeper down, the same loop
    with pytest.raises(DataError, match=r"red/up is a link back to .*d itself"):
        find_photos(root)
    (root / "red" / "up").unlink()
    (root / "Images").mkdir()  # Stanford Dogs' layout: a link back from one level down
    make_dataset(root / "Images", per_class=2, classes=("pug", "beagle"))
    (root / "Images" / "all").symlink_to("..")
    (root / "red").rename(tmp_path / "red")  # so that DATA holds no photos of its own
    (root / "green").rename(tmp_path / "green")
    (root / "blue").rename(tmp_path / "blue")
    with pytest.raises(DataError, match=r"Images/all is a link back to .*d itself"):
        find_photos(root)


def test_a_class_folder_linked_to_another_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    (root / "rouge").symlink_to("red")
    with pytest.raises(DataError, match=r"rouge leads to .*red, the same folder as class folder"):
        find_photos(root)
    (root / "rouge").unlink()
    (root / "red" / "dark").mkdir()
    (root / "dark").symlink_to("red/dark")
    with pytest.raises(DataError, match=r"dark leads to .*, a folder inside class folder .*red"):
        find_photos(root)


def test_the_same_file_twice(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    (root / "red" / "again.jpg").symlink_to(root / "red" / "000.jpg")
    photos = find_photos(root)
    assert len(photos.photos) == 9 and any("found twice" in n for n in photos.notes)
    (root / "green" / "sub").symlink_to(root / "blue")
    with pytest.raises(DataError, match=r"blue/000.jpg and .*green/sub/000.jpg are the same "
                                        "photo with two labels, 'blue' and 'green'"):
        find_photos(root)
    (root / "green" / "sub").unlink()
    make_dataset(tmp_path / "s" / "train", per_class=3)
    (tmp_path / "s" / "valid").mkdir()
    (tmp_path / "s" / "valid" / "red").symlink_to(tmp_path / "s" / "train" / "red")
    with pytest.raises(DataError, match="once for training and once for validation"):
        find_photos(tmp_path / "s")


def test_linked_class_folders_and_files_that_lead_elsewhere_work(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3, classes=("red", "green"))
    elsewhere = make_dataset(tmp_path / "mnt", per_class=3, classes=("blue", "more"))
    (root / "blue").symlink_to(elsewhere / "blue")  # DATA/beagle -> /mnt/photos/beagle
    (root / "red" / "more").symlink_to(elsewhere / "more")  # a linked folder inside a class
    extra = make_photo(tmp_path / "mnt" / "extra.jpg", (40, 170, 60))
    (root / "green" / "linked.jpg").symlink_to(extra)
    (root / "red" / "loop").symlink_to(".")  # back to its own class: scanned once
    (root / "red" / "broken.jpg").symlink_to("nowhere.jpg")
    photos = find_photos(root)
    assert photos.counts() == {"blue": (2, 1), "green": (3, 1), "red": (5, 1)}
    listed = {p.path for p in photos.photos}
    assert {root / "blue" / "000.jpg", root / "red" / "more" / "000.jpg",
            root / "green" / "linked.jpg"} <= listed
    assert not photos.notes


def test_folders_that_cannot_be_read_are_named(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d", per_class=3)
    scandir = os.scandir

    def refuse_red(path):  # as a folder without read permission does (root reads them all)
        if Path(path).name == "red":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_red)
    with pytest.raises(DataError, match=r"^Cannot read .*red: Permission denied. Check"):
        find_photos(root)


def test_a_folder_named_like_a_csv(tmp_path):
    (tmp_path / "labels.csv").mkdir()
    with pytest.raises(DataError, match="is a folder, not a CSV file"):
        find_photos(tmp_path / "labels.csv")
