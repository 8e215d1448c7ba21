"""The speed-ups compute the same training as the plain loop (speedups.py: one switch)."""

from __future__ import annotations

import pytest

from clearclass.training import speedups, train
from tests.conftest import make_dataset


def _history(data, out, monkeypatch, on: bool, **settings):
    monkeypatch.setenv(speedups.SWITCH, "1" if on else "0")
    run = train(str(data), out=str(out), overwrite=True, **settings)
    return [(row.train_loss, row.valid_loss, row.accuracy) for row in run.history]


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [4, 32], ids=["onnx-runtime-body", "micro-batches"])
def test_the_speedups_give_the_plain_loops_figures(tmp_path, tiny_train_settings, monkeypatch,
                                                    batch_size):
    # BatchNorm statistics kept (as with pretrained weights): the frozen body runs forward
    # only (in ONNX Runtime with 10 batches or more: batches of 4 give 18), validation on a
    # folded copy, and unfrozen batches of 32 in chunks of 16 with the depthwise gradient.
    from clearclass.training import forward_only

    engines, real = [], forward_only._in_onnx_runtime

    def recorded(*args):
        runner = real(*args)
        engines.append(runner is not None)
        return runner

    monkeypatch.setattr(forward_only, "_in_onnx_runtime", recorded)
    data = make_dataset(tmp_path / "d", per_class=18)  # 43 training photos
    settings = {**tiny_train_settings, "adapt_batchnorm": False, "batch_size": batch_size}
    fast = _history(data, tmp_path / "fast", monkeypatch, True, **settings)
    if batch_size == 4:  # the frozen body's features did come from ONNX Runtime
        assert engines and engines[0]
    plain = _history(data, tmp_path / "plain", monkeypatch, False, **settings)
    assert len(fast) == len(plain) == 2
    for got, expected in zip(fast, plain):
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_the_switch_turns_every_speedup_off(monkeypatch):
    monkeypatch.setenv(speedups.SWITCH, "0")
    assert not speedups.enabled()
    monkeypatch.delenv(speedups.SWITCH)
    assert speedups.enabled()
