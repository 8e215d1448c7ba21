"""`clearclass search` against a fake Pexels (and Pixabay, and ddgs) serving good, corrupt,
duplicate, tiny, rate-limited and never-arriving photos."""

from __future__ import annotations

import csv
import hashlib
import logging
import traceback
from pathlib import Path

import pytest
from PIL import Image

from clearclass.acquire.manifest import COLUMNS
from clearclass.acquire.search import CrossClass, search, slugify
from clearclass.data.sources import find_photos
from clearclass.errors import AcquireError, CredentialsError
from tests.acquire.conftest import CORRUPT, Reply, near_copy, photo

FAST = dict(timeout=0.5, retries=1, workers=4)  # a photo that never arrives costs ~1 s


def fake_pexels(web, catalogue: dict[str, list[str]], key: str = "k", per_page: int = 4):
    """A Pexels API: each query's image URLs, `per_page` at a time, in Pexels' JSON shape."""
    ids = {url: 1000 + i for i, url in enumerate(u for urls in catalogue.values() for u in urls)}

    def answer(request):
        if request.headers.get("authorization") != key:
            return 401, {"error": "Unauthorized"}
        urls = catalogue.get(request.query["query"], [])
        n = int(request.query.get("page", 1))
        photos = [{"id": ids[u], "width": 128, "height": 96, "alt": "",
                   "url": f"https://www.pexels.com/photo/{ids[u]}/",
                   "photographer": f"Photographer {ids[u]}",
                   "src": {"original": u, "large": u, "medium": u}}
                  for u in urls[(n - 1) * per_page : n * per_page]]
        body = {"page": n, "per_page": per_page, "total_results": len(urls), "photos": photos}
        if n * per_page < len(urls):
            body["next_page"] = f"{web.url}/v1/search?page={n + 1}&per_page={per_page}"
        return 200, body

    web.json("/v1/search", answer)


@pytest.fixture
def dog_web(web):
    """beagle: 5 good photos among every kind of bad one; pug: 2 good ones, one of them a
    beagle photo again, and bad ones."""
    beagles = {i: photo(i) for i in range(1, 7)}
    serve = web.file
    beagle = [
        serve("/img/b1.jpg", beagles[1]),
        serve("/img/corrupt.jpg", CORRUPT),
        serve("/img/b1-copy.jpg", beagles[1]),  # identical bytes, another URL
        serve("/img/tiny.jpg", photo(7, size=(40, 30))),
        serve("/img/b2.jpg", beagles[2]),
        serve("/img/b2-small.jpg", near_copy(beagles[2])),  # resized and re-encoded
        web.hang("/img/never.jpg"),
        serve("/img/b3.jpg", beagles[3]),
        web.sequence("/img/b4.jpg", Reply(429, b"slow down", {"Retry-After": "1"}),
                     Reply(200, beagles[4], {"Content-Type": "image/jpeg"})),
        serve("/img/b5.jpg", beagles[5]),
        serve("/img/b6.jpg", beagles[6]),
    ]
    pug = [
        serve("/img/p1.png", photo(11, fmt="PNG"), "image/png"),
        serve("/img/b3-again.jpg", beagles[3]),  # the same photo under the other class
        serve("/img/truncated.jpg", photo(12, size=(300, 200))[:1500]),
        serve("/img/p2.jpg", photo(13)),
        serve("/img/page.html", b"<html>not a photo</html>", "text/html"),
    ]
    fake_pexels(web, {"beagle": beagle, "pug": pug})
    web.urls = {"beagle": beagle, "pug": pug}
    return web


def _manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_way_a_new_user_tries_it(dog_web, tmp_path, monkeypatch, capsys):
    # PEXELS_API_KEY=k CLEARCLASS_PEXELS_URL=... clearclass search "beagle" "pug"
    #   --provider pexels --per-class 5 --out DIR
    monkeypatch.setenv("PEXELS_API_KEY", "k")
    monkeypatch.setenv("CLEARCLASS_PEXELS_URL", dog_web.url)
    out = tmp_path / "DIR"
    report = search(["beagle", "pug"], provider="pexels", per_class=5, out=out, **FAST)

    urls = dog_web.urls
    rows = _manifest(out)
    assert tuple(rows[0]) == COLUMNS
    kept = [r["source_url"] for r in rows]
    assert kept == [urls["beagle"][i] for i in (0, 4, 7, 8, 9)] + [urls["pug"][i] for i in (0, 3)]
    for row in rows:
        path = out / row["file"]
        assert path.parent.name == row["class"] and path.is_file()
        with Image.open(path) as img:
            img.load()
            assert min(img.size) >= 64 and (img.width, img.height) == \
                (int(row["width"]), int(row["height"]))
        assert row["provider"] == "pexels" and row["licence"] == "Pexels License"
        assert row["author"].startswith("Photographer ")
        assert row["page_url"].startswith("https://www.pexels.com/photo/")
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in (out / "beagle").iterdir()) == \
        sorted(Path(r["file"]).name for r in rows if r["class"] == "beagle")
    assert len(list((out / "pug").iterdir())) == 2
    assert (out / rows[5]["file"]).suffix == ".png"  # PNG content keeps its extension

    beagle, pug = report.classes
    assert (len(beagle.saved), beagle.ran_out) == (5, False)
    assert dict(beagle.skipped) == {"unreadable": 1, "duplicate": 1, "too small": 1,
                                    "near duplicate": 1, "download failed": 1}
    assert (len(pug.saved), pug.ran_out) == (2, True)
    assert dict(pug.skipped) == {"under another class": 1, "unreadable": 1,
                                 "download failed": 1}
    assert report.cross_class == [CrossClass(rows[2]["file"], "beagle", "pug",
                                             urls["pug"][1])]
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "pug: 2 of 5 photos; Pexels has no more results for 'pug'" in err
    assert "429 Too Many Requests; waiting 1 s" in err
    out_text = " ".join(captured.out.split())
    assert "came up for two classes" in out_text and "also came up for pug" in out_text
    assert f"Next: clearclass verify {out}" in out_text

    # The folder trains as it is.
    photos = find_photos(out)
    assert photos.class_ids == ["beagle", "pug"] and len(photos.photos) == 7


def test_running_again_appends_and_never_duplicates(dog_web, tmp_path, monkeypatch):
    environ = {"PEXELS_API_KEY": "k", "CLEARCLASS_PEXELS_URL": dog_web.url}
    out = tmp_path / "dogs"
    search(["beagle", "pug"], provider="pexels", per_class=5, out=out, environ=environ, **FAST)
    first = _manifest(out)
    beagle_hits = len([s for s in dog_web.seen if s.path.startswith("/img/b")])

    again = search(["beagle"], provider="pexels", per_class=5, out=out, environ=environ, **FAST)
    assert _manifest(out) == first
    assert again.saved == 0 and again.classes[0].before == 5
    assert len([s for s in dog_web.seen if s.path.startswith("/img/b")]) == beagle_hits

    more = search(["beagle"], provider="pexels", per_class=6, out=out, environ=environ, **FAST)
    rows = _manifest(out)
    assert rows[:7] == first and len(rows) == 8
    assert rows[7]["source_url"] == dog_web.urls["beagle"][10]
    assert len(list((out / "beagle").iterdir())) == 6
    # Photos already listed are not downloaded again.
    assert len(dog_web.hits("/img/b1.jpg")) == 1 and len(dog_web.hits("/img/b5.jpg")) == 1
    assert more.classes[0].skipped["duplicate"] == 1  # b1-copy, downloaded to find out

    # A photo deleted by hand leaves the manifest with the next run.
    (out / rows[0]["file"]).unlink()
    search(["pug"], provider="pexels", per_class=2, out=out, environ=environ,
           **FAST)
    assert [r["file"] for r in _manifest(out)] == [r["file"] for r in rows[1:]]


def test_photos_already_in_a_class_folder_count_and_are_not_fetched_twice(web, tmp_path):
    mine = photo(21)
    (tmp_path / "dogs" / "beagle").mkdir(parents=True)
    (tmp_path / "dogs" / "beagle" / "mine.jpg").write_bytes(mine)
    fake_pexels(web, {"beagle": [web.file("/same.jpg", mine), web.file("/new.jpg", photo(22))]})
    report = search(["beagle"], provider="pexels", per_class=2, out=tmp_path / "dogs",
                    environ={"PEXELS_API_KEY": "k", "CLEARCLASS_PEXELS_URL": web.url}, **FAST)
    result = report.classes[0]
    assert (result.before, len(result.saved), result.skipped["duplicate"]) == (1, 1, 1)
    assert [r["source_url"] for r in _manifest(tmp_path / "dogs")] == [web.url + "/new.jpg"]


def test_max_side_shrinks_large_photos_on_save(web, tmp_path):
    fake_pexels(web, {"sea": [web.file("/big.jpg", photo(31, size=(400, 300)))]})
    search(["sea"], provider="pexels", per_class=1, out=tmp_path / "o", max_side=100,
           environ={"PEXELS_API_KEY": "k", "CLEARCLASS_PEXELS_URL": web.url}, **FAST)
    row = _manifest(tmp_path / "o")[0]
    with Image.open(tmp_path / "o" / row["file"]) as img:
        assert img.size == (100, 75) and img.format == "JPEG"
    assert (row["width"], row["height"]) == ("100", "75")


def test_classes_from_a_file_become_slugged_folders(web, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("Golden Retriever\n# not a class\n\nshiba inu\n", encoding="utf-8")
    fake_pexels(web, {"Golden Retriever": [web.file("/g.jpg", photo(41))],
                      "shiba inu": [web.file("/s.jpg", photo(42))]})
    report = search(classes_file=classes, provider="pexels", per_class=1, out=tmp_path / "o",
                    environ={"PEXELS_API_KEY": "k", "CLEARCLASS_PEXELS_URL": web.url}, **FAST)
    assert [(c.class_id, c.query) for c in report.classes] == \
        [("golden_retriever", "Golden Retriever"), ("shiba_inu", "shiba inu")]
    assert (tmp_path / "o" / "golden_retriever").is_dir()


def test_slugs():
    assert slugify("Golden Retriever") == "golden_retriever"
    assert slugify("  St. Bernard's dog! ") == "st_bernard_s_dog"
    assert slugify("Chien de Montagne des Pyrénées") == "chien_de_montagne_des_pyrénées"


def test_queries_that_would_share_a_folder_are_refused(tmp_path):
    with pytest.raises(AcquireError, match="would share the folder golden_retriever/"):
        search(["golden retriever", "Golden-Retriever"], provider="duckduckgo",
               out=tmp_path / "o")
    with pytest.raises(AcquireError, match="No classes to search for"):
        search([], out=tmp_path / "o")


def test_a_missing_key_fails_before_anything_is_written(tmp_path):
    with pytest.raises(CredentialsError, match="PEXELS_API_KEY"):
        search(["pug"], provider="pexels", out=tmp_path / "o", environ={})
    assert not (tmp_path / "o").exists()


def test_duckduckgo_results_are_downloaded_and_their_missing_licence_said(
        web, tmp_path, monkeypatch, capsys):
    good = web.file("/d1.jpg", photo(51))

    def images(self, query, **kwargs):
        return [{"title": "t", "image": good, "thumbnail": "", "url": "https://a.example/p",
                 "height": 96, "width": 128, "source": "Bing"}] if kwargs["page"] == 1 else []

    monkeypatch.setattr("ddgs.ddgs.DDGS.images", images)
    report = search(["corgi"], provider="duckduckgo", per_class=3, out=tmp_path / "o", **FAST)
    assert report.saved == 1
    row = _manifest(tmp_path / "o")[0]
    assert (row["provider"], row["licence"], row["page_url"]) == \
        ("duckduckgo", "", "https://a.example/p")
    captured = capsys.readouterr()
    assert "gives no licence" in " ".join(captured.out.split())
    assert "corgi: 1 of 3 photos; DuckDuckGo has no more results" in " ".join(captured.err.split())


def test_the_api_key_appears_nowhere(web, tmp_path, capsys, caplog):
    key = "pixabay-SECRET-5e1f0a77c3"
    good = [web.file(f"/px{i}.jpg", photo(60 + i)) for i in range(2)]

    def answer(request):
        if request.query["page"] == "1":
            return 200, {"total": 400, "totalHits": 400, "hits": [
                {"id": i, "pageURL": f"https://pixabay.com/photos/{i}/", "largeImageURL": u,
                 "user": "someone", "user_id": 7} for i, u in enumerate(good)]}
        return 500, "internal error"

    web.json("/api/", answer)
    with caplog.at_level(logging.DEBUG), pytest.raises(AcquireError) as error:
        search(["owl"], provider="pixabay", per_class=5, out=tmp_path / "o",
               environ={"PIXABAY_API_KEY": key, "CLEARCLASS_PIXABAY_URL": web.url}, **FAST)

    assert web.hits("/api/")[0].query["key"] == key  # it was sent, to the API only
    assert all("key" not in s.query for s in web.seen if s.path != "/api/")
    message = str(error.value)
    assert "HTTP 500" in message and "key=***" in message
    trace = "".join(traceback.format_exception(error.value))
    captured = capsys.readouterr()
    files = b"".join(p.read_bytes() for p in (tmp_path / "o").rglob("*") if p.is_file())
    for place in (message, trace, captured.out, captured.err, caplog.text):
        assert key not in place
    assert key.encode() not in files
    # An interrupted search keeps what it saved, with its source.
    assert len(_manifest(tmp_path / "o")) == 2


def test_the_command_line_a_new_user_types(dog_web, tmp_path):
    """PEXELS_API_KEY=k CLEARCLASS_PEXELS_URL=... clearclass search "beagle" "pug"
    --provider pexels --per-class 5 --out DIR"""
    from typer.testing import CliRunner

    from clearclass.cli import app

    out = tmp_path / "DIR"
    result = CliRunner().invoke(
        app, ["search", "beagle", "pug", "--provider", "pexels", "--per-class", "5",
              "--out", str(out), "--timeout", "0.5", "--retries", "1"],
        env={"PEXELS_API_KEY": "k", "CLEARCLASS_PEXELS_URL": dog_web.url})
    assert result.exit_code == 0, result.output
    assert len(list((out / "beagle").iterdir())) == 5
    assert len(list((out / "pug").iterdir())) == 2
    rows = _manifest(out)
    assert {r["class"] for r in rows} == {"beagle", "pug"} and len(rows) == 7
    assert all(r["source_url"].startswith(dog_web.url) and r["provider"] == "pexels"
               for r in rows)
    result = CliRunner().invoke(app, ["search", "beagle", "--provider", "pexels",
                                      "--out", str(out)], env={"PEXELS_API_KEY": ""})
    assert result.exit_code != 0
