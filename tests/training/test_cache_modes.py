"""Training with each cache (--cache memory, disk, off) and the room check before decoding."""

from __future__ import annotations

import json

import pytest

from clearclass.data import reading as reading_module
from clearclass.errors import SettingError
from clearclass.training import train
from tests.conftest import make_dataset


def test_cache_off_trains_to_the_same_numbers_as_memory(tmp_path, tiny_train_settings):
    data = make_dataset(tmp_path / "d", per_class=8)
    (data / "red" / "notes.jpg").write_text("not a photo")
    settings = {**tiny_train_settings, "epochs": 0}  # one (frozen) epoch is enough here
    memory = train(data=str(data), out=str(tmp_path / "memory"),
                   **{**settings, "cache": "memory", "workers": 0})
    # Never refused, whatever the limit: nothing is kept. Batches come from 2 workers.
    off = train(data=str(data), out=str(tmp_path / "off"),
                **{**settings, "cache": "off", "cache_limit": "1KB", "workers": 2})
    assert [(r.train_loss, r.valid_loss, r.accuracy) for r in off.history] == \
        [(r.train_loss, r.valid_loss, r.accuracy) for r in memory.history]
    assert off.accuracy == memory.accuracy
    skipped = (off.run_dir / "skipped.csv").read_text()
    assert "notes.jpg" in skipped and skipped == (memory.run_dir / "skipped.csv").read_text()
    config = json.loads((off.run_dir / "config.json").read_text())["config"]
    assert (config["cache"], config["cache_limit"]) == ("off", "1KB")


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_a_cache_too_small_is_refused_before_any_decoding(tmp_path, tiny_train_settings,
                                                          monkeypatch, cache):
    data = make_dataset(tmp_path / "d", per_class=4)

    def never(*args, **kwargs):
        raise AssertionError("decoding started")

    monkeypatch.setattr(reading_module, "decode_photos", never)
    with pytest.raises(SettingError) as caught:
        train(data=str(data), out=str(tmp_path / "run"),
              **{**tiny_train_settings, "cache": cache, "cache_limit": "1KB"})
    message = caught.value.as_option()
    assert message.startswith("--cache-limit 1KB: the decoded photos need about ")
    assert f"the {cache} cache may use 1.0 KB" in message and "--cache off" in message
    assert not (tmp_path / "run").exists()
