"""`download_dataset` against archives served from the fake web: fastai's layout and Stanford
Dogs', resume, checksums, safe extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest
from scipy.io import savemat

from clearclass import acquire
from clearclass.acquire import datasets
from clearclass.acquire.datasets import Archive, download_dataset
from clearclass.data.sources import find_photos
from clearclass.errors import AcquireError
from tests.acquire.conftest import photo


def tar_bytes(files: dict[str, bytes], compression: str = "gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


IMAGEWOOF = {
    "imagewoof2-160/train/n02086240/a.JPEG": photo(1),
    "imagewoof2-160/train/n02086240/b.JPEG": photo(2),
    "imagewoof2-160/train/n02088364/c.JPEG": photo(3),
    "imagewoof2-160/val/n02086240/d.JPEG": photo(4),
    "imagewoof2-160/val/n02088364/e.JPEG": photo(5),
    "imagewoof2-160/noisy_imagewoof.csv": b"path,noisy_labels_0,is_valid\n",
}


@pytest.fixture
def woof(web, monkeypatch):
    """imagewoof2-160.tgz on the fake web, published with its true size and MD5."""
    data = tar_bytes(IMAGEWOOF)
    web.file("/fastai/imagewoof2-160.tgz", data, "application/x-gzip")
    monkeypatch.setenv("CLEARCLASS_FASTAI_URL", web.url + "/fastai")
    monkeypatch.setitem(datasets.FASTAI_ARCHIVES, ("imagewoof", "160"),
                        Archive("imagewoof2-160.tgz", len(data), hashlib.md5(data).hexdigest()))
    web.data = data
    return web


def test_the_package_lists_the_datasets_and_sizes():
    assert (acquire.DATASETS, acquire.SIZES) == (datasets.DATASETS, datasets.SIZES)
    assert {name for name, _ in datasets.FASTAI_ARCHIVES} | {"stanford-dogs"} == \
        set(datasets.DATASETS)


def test_imagewoof_is_unpacked_with_its_official_split(woof, tmp_path, capsys):
    result = download_dataset("imagewoof", size="160", out=tmp_path)
    folder = tmp_path / "imagewoof2-160"
    assert result.folder == folder and result.train_on == folder / "labels.csv"
    assert (result.classes, result.train, result.valid) == (2, 3, 2)
    assert not (tmp_path / "imagewoof2-160.tgz").exists()  # removed once unpacked
    assert [p.name for p in tmp_path.iterdir()] == ["imagewoof2-160"]  # no staging left
    photos = find_photos(result.train_on)
    assert photos.class_ids == ["n02086240-Shih-Tzu", "n02088364-beagle"]
    assert photos.display_names == ["Shih-Tzu", "beagle"]
    assert sorted(p.path.name for p in photos.valid) == ["d.JPEG", "e.JPEG"]
    assert f"Next: clearclass train {folder / 'labels.csv'}" in \
        " ".join(capsys.readouterr().out.split())

    again = download_dataset("imagewoof", size="160", out=tmp_path)
    assert again.train == 3 and len(woof.hits("/fastai/imagewoof2-160.tgz")) == 1


def test_a_partial_download_is_resumed(woof, tmp_path):
    (tmp_path / "imagewoof2-160.tgz.part").write_bytes(woof.data[:1000])
    download_dataset("imagewoof", size="160", out=tmp_path)
    (request,) = woof.hits("/fastai/imagewoof2-160.tgz")
    assert request.headers["range"] == "bytes=1000-"
    assert (tmp_path / "imagewoof2-160" / "train" / "n02086240" / "a.JPEG").is_file()


def test_a_wrong_checksum_is_refused_and_the_file_removed(woof, tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.FASTAI_ARCHIVES, ("imagewoof", "160"),
                        Archive("imagewoof2-160.tgz", len(woof.data), "0" * 32))
    with pytest.raises(AcquireError, match=r"has MD5 [0-9a-f]{32}, but 0{32} is published"):
        download_dataset("imagewoof", size="160", out=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_stanford_dogs_keeps_the_official_train_test_split(web, tmp_path, monkeypatch):
    breeds = {"n02085620-Chihuahua": 3, "n02085782-Japanese_spaniel": 2}
    images, annotations, listed = {}, {}, []
    for b, (breed, n) in enumerate(breeds.items()):
        for i in range(n):
            rel = f"{breed}/{breed[:9]}_{i}.jpg"
            images[f"Images/{rel}"] = photo(10 * b + i)
            annotations[f"Annotation/{rel[:-4]}"] = b"<annotation/>"
            listed.append(rel)
    train, test = [p for p in listed if not p.endswith("_0.jpg")], \
        [p for p in listed if p.endswith("_0.jpg")]
    lists = {}
    for name, files in (("train_list.mat", train), ("test_list.mat", test),
                        ("file_list.mat", listed)):
        cells = np.empty((len(files), 1), dtype=object)
        for i, f in enumerate(files):
            cells[i, 0] = np.array([f])
        buffer = io.BytesIO()
        savemat(buffer, {"file_list": cells, "labels": np.ones((len(files), 1))})
        lists[name] = buffer.getvalue()
    archives = []
    for name, content in (("images.tar", images), ("annotation.tar", annotations),
                          ("lists.tar", lists)):
        data = tar_bytes(content, compression="")
        web.file(f"/dogs/{name}", data, "application/x-tar")
        archives.append(Archive(name, len(data)))
    monkeypatch.setattr(datasets, "STANFORD_DOGS_ARCHIVES", tuple(archives))
    monkeypatch.setenv("CLEARCLASS_STANFORD_DOGS_URL", web.url + "/dogs")

    result = download_dataset("stanford-dogs", out=tmp_path)
    folder = tmp_path / "stanford-dogs"
    assert (folder / "Annotation").is_dir() and (folder / "train_list.mat").is_file()
    assert (result.classes, result.train, result.valid) == (2, 3, 2)
    photos = find_photos(result.train_on)
    assert sorted(p.path.name for p in photos.valid) == \
        ["n02085620_0.jpg", "n02085782_0.jpg"]
    assert photos.display_names == ["Chihuahua", "Japanese spaniel"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stanford-dogs"]


def test_an_archive_reaching_outside_its_folder_is_refused(web, tmp_path, monkeypatch):
    data = tar_bytes({"imagewoof2-160/train/x/a.JPEG": photo(1), "../escaped.txt": b"gotcha"})
    web.file("/fastai/imagewoof2-160.tgz", data)
    monkeypatch.setenv("CLEARCLASS_FASTAI_URL", web.url + "/fastai")
    monkeypatch.setitem(datasets.FASTAI_ARCHIVES, ("imagewoof", "160"),
                        Archive("imagewoof2-160.tgz", len(data), hashlib.md5(data).hexdigest()))
    out = tmp_path / "out"
    with pytest.raises(AcquireError, match="unsafe entry '../escaped.txt'"):
        download_dataset("imagewoof", size="160", out=out)
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["imagewoof2-160.tgz"]


def test_unknown_names_and_sizes_list_the_choices(tmp_path):
    with pytest.raises(AcquireError, match="choose one of imagewoof, imagenette, stanford-dogs"):
        download_dataset("cifar10", out=tmp_path)
    with pytest.raises(AcquireError, match="choose one of full, 320, 160"):
        download_dataset("imagenette", size="224", out=tmp_path)
