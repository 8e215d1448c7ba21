from __future__ import annotations

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
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="not a CSV"):
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
    every_a = {p.path for p in photos.photos if p.label == "a"}
    with pytest.raises(DataError, match=r"Class 'a' has no readable image.*" + str(Path("d", "a"))):
        photos.without(every_a)
