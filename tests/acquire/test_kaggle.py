"""`download_kaggle` with the kaggle client's real credential lookup, and only its network
call (`KaggleApi.dataset_download_files`) replaced by one that writes a local zip."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import requests

from clearclass.acquire.kaggle import describe_layout, download_kaggle
from clearclass.errors import AcquireError, CredentialsError
from tests.acquire.conftest import photo

KEY = "kaggle-key-0123456789abcdef"


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


STANFORD = zip_bytes({
    "images/Images/n02085620-Chihuahua/n02085620_1.jpg": photo(1),
    "images/Images/n02085620-Chihuahua/n02085620_2.jpg": photo(2),
    "images/Images/n02085782-Japanese_spaniel/n02085782_1.jpg": photo(3),
    "annotations/Annotation/n02085620-Chihuahua/n02085620_1": b"<annotation/>",
})


@pytest.fixture
def kaggle_home(tmp_path, monkeypatch) -> Path:
    """No credentials anywhere: a fresh home and config folder, no KAGGLE_* variables."""
    home, config = tmp_path / "home", tmp_path / "kaggle-config"
    home.mkdir()
    config.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    for variable in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "XDG_CONFIG_HOME",
                     "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(variable, raising=False)
    return config


@pytest.fixture
def kaggle_server(kaggle_home, monkeypatch):
    """`serve(zip)` makes the kaggle client 'download' that zip; `calls` records requests."""
    with contextlib.redirect_stdout(io.StringIO()):  # import kaggle prints its login help
        from kaggle.api.kaggle_api_extended import KaggleApi

    class Server:
        calls: list[tuple] = []

        def serve(self, data: bytes | Exception) -> None:
            def download(api, dataset, path=None, force=False, quiet=True, unzip=False,
                         licenses=None):
                self.calls.append((dataset, path, unzip, api.config_values.get("username")))
                if isinstance(data, Exception):
                    raise data
                Path(path, dataset.split("/")[1] + ".zip").write_bytes(data)

            monkeypatch.setattr(KaggleApi, "dataset_download_files", download)

    return Server()


def _credentials(config: Path, mode: int = 0o600) -> Path:
    path = config / "kaggle.json"
    path.write_text(json.dumps({"username": "tester", "key": KEY}))
    path.chmod(mode)
    return path


def test_stanford_dogs_from_kaggle_names_the_folder_to_train_on(kaggle_home, kaggle_server,
                                                                 tmp_path, capsys):
    _credentials(kaggle_home)
    kaggle_server.serve(STANFORD)
    result = download_kaggle("jessicali9530/stanford-dogs-dataset", out=tmp_path / "data")
    folder = tmp_path / "data" / "stanford-dogs-dataset"
    assert kaggle_server.calls == [("jessicali9530/stanford-dogs-dataset",
                                    str(tmp_path / "data"), False, "tester")]
    assert result.train_on == folder / "images" / "Images"
    assert (result.classes, result.train) == (2, 3)
    assert not (tmp_path / "data" / "stanford-dogs-dataset.zip").exists()
    out = " ".join(capsys.readouterr().out.split())
    assert "Stanford Dogs layout: 2 breed folders" in out and "annotations/" in out
    assert f"Next: clearclass train {folder / 'images' / 'Images'}" in out

    # Already there: no second download, the same answer.
    again = download_kaggle("https://www.kaggle.com/datasets/jessicali9530/stanford-dogs-dataset",
                            out=tmp_path / "data")
    assert again.train_on == result.train_on and len(kaggle_server.calls) == 1


def test_a_key_readable_by_others_is_warned_about(kaggle_home, kaggle_server, tmp_path, capsys):
    path = _credentials(kaggle_home, mode=0o644)
    kaggle_server.serve(STANFORD)
    download_kaggle("o/stanford", out=tmp_path / "d")
    err = " ".join(capsys.readouterr().err.split())
    assert "readable by other users" in err and f"chmod 600 {path}" in err


def test_username_and_key_from_the_environment(kaggle_home, kaggle_server, tmp_path,
                                               monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "envuser")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    kaggle_server.serve(STANFORD)
    download_kaggle("o/stanford", out=tmp_path / "d")
    assert kaggle_server.calls[-1][3] == "envuser"


def test_no_credentials_is_one_clear_error(kaggle_home, kaggle_server, tmp_path, capsys):
    kaggle_server.serve(STANFORD)
    with pytest.raises(CredentialsError) as error:
        download_kaggle("o/stanford", out=tmp_path / "d")
    message = str(error.value)
    assert str(kaggle_home / "kaggle.json") in message
    assert "https://www.kaggle.com/settings" in message and "KAGGLE_USERNAME" in message
    assert kaggle_server.calls == []
    assert capsys.readouterr().out == ""  # kaggle's own help text is not printed


@pytest.mark.parametrize("status, expected", [
    (404, "Kaggle has no dataset o/missing"),
    (403, "accept its rules"),
])
def test_kaggle_refusals_say_what_to_do(kaggle_home, kaggle_server, tmp_path, status, expected):
    _credentials(kaggle_home)
    response = requests.Response()
    response.status_code = status
    kaggle_server.serve(requests.HTTPError(f"{status} Client Error", response=response))
    with pytest.raises(AcquireError, match=expected):
        download_kaggle("o/missing", out=tmp_path / "d")


def test_a_zip_reaching_outside_its_folder_is_refused(kaggle_home, kaggle_server, tmp_path):
    _credentials(kaggle_home)
    kaggle_server.serve(zip_bytes({"ok/a.jpg": photo(1), "../../escaped.txt": b"gotcha"}))
    with pytest.raises(AcquireError, match="unsafe entry"):
        download_kaggle("o/evil", out=tmp_path / "d")
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (tmp_path / "d" / "evil").exists()


def test_not_a_dataset_name(tmp_path):
    with pytest.raises(AcquireError, match="OWNER/DATASET"):
        download_kaggle("stanford dogs", out=tmp_path)


def test_layouts_other_datasets_use(tmp_path):
    def make(root: Path, rels: list[str]) -> Path:
        for rel in rels:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(photo(len(rel)))
        return root

    split = make(tmp_path / "split", ["data/train/cat/1.jpg", "data/train/dog/2.jpg",
                                      "data/test/cat/3.jpg", "data/test/dog/4.jpg"])
    result = describe_layout("x/split", split)
    assert result.train_on == split / "data" and (result.train, result.valid) == (2, 2)
    flat = make(tmp_path / "flat", ["pets/cat/1.jpg", "pets/dog/2.jpg"])
    assert describe_layout("x/flat", flat).train_on == flat / "pets"
    loose = make(tmp_path / "loose", ["a.jpg", "b.jpg"])
    unknown = describe_layout("x/loose", loose)
    assert unknown.train_on is None and "No folder of class folders" in unknown.layout
