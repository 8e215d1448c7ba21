from __future__ import annotations

import csv
import json

import pytest
import torch

from clearclass.errors import ClearclassError, DataError, RunError, SettingError
from clearclass.training import TrainConfig, train
from clearclass.training import loop as loop_module
from tests.conftest import COLOURS, make_dataset, make_photo, run_cli, tiny_options


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_writes_metrics_split_config_and_model(trained_run):
    rows = _rows(trained_run / "metrics.csv")
    assert [r["stage"] for r in rows] == ["frozen", "unfrozen", "unfrozen", "unfrozen"]
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "accuracy", "time", "stage"]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]["accuracy"]) >= 0.8  # colours are easy, even from random weights
    assert (trained_run / "model" / "model.safetensors").is_file()
    info = json.loads((trained_run / "model" / "model.json").read_text())
    assert info["classes"][0] == {"id": "blue", "name": "blue"}
    assert info["preprocessing"]["size"] == 32
    split = _rows(trained_run / "split.csv")
    assert sum(r["is_valid"] == "True" for r in split) == 12  # 20% of 20, per class
    assert json.loads((trained_run / "config.json").read_text())["config"]["model"] == "test_resnet"
    assert _rows(trained_run / "skipped.csv") == []


def test_same_seed_same_numbers_on_the_cpu(tmp_path, tiny_train_settings):
    data = make_dataset(tmp_path / "d", per_class=6)
    runs = [train(data=str(data), out=str(tmp_path / f"run{i}"),
                  **tiny_train_settings) for i in range(2)]
    first, second = ([(r.train_loss, r.valid_loss, r.accuracy) for r in run.history]
                     for run in runs)
    assert first == second
    third = train(data=str(data), out=str(tmp_path / "run3"),
                  **{**tiny_train_settings, "seed": 7})
    assert [(r.train_loss, r.valid_loss) for r in third.history] != \
        [(a, b) for a, b, _ in first]


def test_bad_files_are_skipped_and_listed_never_a_crash(tmp_path, tiny_train_settings):
    data = make_dataset(tmp_path / "d", per_class=6)
    (data / "red" / "empty.jpg").write_bytes(b"")
    (data / "green" / "notes.jpg").write_text("not a photo")
    good = make_photo(tmp_path / "good.jpg", size=(64, 64)).read_bytes()
    (data / "blue" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    make_photo(data / "blue" / "cmyk.jpg", (40, 60, 200), mode="CMYK")
    make_photo(data / "red" / "gray ünïcødé.png", (90, 90, 90), mode="L")
    run = train(data=str(data), out=str(tmp_path / "run"), **tiny_train_settings)
    skipped = _rows(run.run_dir / "skipped.csv")
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in skipped) == \
        ["empty.jpg", "notes.jpg", "truncated.jpg"]
    assert all(r["reason"] for r in skipped)
    kept = [r["path"] for r in _rows(run.run_dir / "split.csv")]
    assert any(p.endswith("cmyk.jpg") for p in kept)
    assert any(p.endswith("gray ünïcødé.png") for p in kept)


def test_a_class_whose_files_are_all_unreadable_is_named(tmp_path, tiny_train_settings):
    data = make_dataset(tmp_path / "d", per_class=4, classes=("red", "blue"))
    for i in range(2):
        (data / "broken" / f"{i}.jpg").parent.mkdir(exist_ok=True)
        (data / "broken" / f"{i}.jpg").write_bytes(b"\xff\xd8 nope")
    with pytest.raises(DataError, match="Class 'broken' has no readable image"):
        train(data=str(data), out=str(tmp_path / "run"), **tiny_train_settings)


def test_an_existing_model_is_not_overwritten_silently(tmp_path, tiny_train_settings):
    data = make_dataset(tmp_path / "d", per_class=4)
    settings = {**tiny_train_settings, "epochs": 0}
    train(data=str(data), out=str(tmp_path / "run"), **settings)
    with pytest.raises(RunError, match="--overwrite"):
        train(data=str(data), out=str(tmp_path / "run"), **settings)
    train(data=str(data), out=str(tmp_path / "run"), overwrite=True, **settings)


def test_interrupted_training_keeps_the_last_finished_epoch(tmp_path, tiny_train_settings,
                                                            monkeypatch):
    data = make_dataset(tmp_path / "d", per_class=6)
    real_step = loop_module.train_one_epoch

    def interrupt_in_second_epoch(run, setup, stage, epoch, *rest):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_step(run, setup, stage, epoch, *rest)

    monkeypatch.setattr(loop_module, "train_one_epoch", interrupt_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(data=str(data), out=str(tmp_path / "run"), **tiny_train_settings)
    info = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert info["training"]["epochs_done"] == 1
    assert len(_rows(tmp_path / "run" / "metrics.csv")) == 1


def test_overwrite_interrupted_before_its_first_epoch_keeps_the_old_run_whole(
        tmp_path, tiny_train_settings, monkeypatch, capsys):
    # The tester's case: the old model scored on the new split read 100% instead of 75%.
    data = make_dataset(tmp_path / "d", per_class=6)
    out = tmp_path / "run"
    train(data=str(data), out=str(out), seed=1, **tiny_train_settings)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop_module, "train_one_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(data=str(data), out=str(out), seed=2, overwrite=True, **tiny_train_settings)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert "still holds the previous run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "run"]  # nothing half-made


def test_a_full_disk_while_saving_keeps_the_previous_epoch_and_says_so(
        tmp_path, tiny_train_settings, monkeypatch):
    import errno

    data = make_dataset(tmp_path / "d", per_class=6)
    from clearclass.training import saving

    real_save, calls = saving.save_bundle, []

    def disk_fills_up(model, info, folder):
        calls.append(folder)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder))
        return real_save(model, info, folder)

    monkeypatch.setattr(saving, "save_bundle", disk_fills_up)
    with pytest.raises(RunError, match="holds the model as of epoch 0.*Free some space"):
        train(data=str(data), out=str(tmp_path / "run"), **tiny_train_settings)
    info = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert info["training"]["epochs_done"] == 1
    assert len(_rows(tmp_path / "run" / "metrics.csv")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "run"]


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder(tmp_path,
                                                                   tiny_train_settings):
    data = make_dataset(tmp_path / "d", per_class=4)
    with pytest.raises(ClearclassError):
        train(data=str(data), out=str(tmp_path / "run"),
              **{**tiny_train_settings, "model": "no_such_model"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_out_must_be_a_run_folder_or_new(tmp_path, tiny_train_settings):
    data = make_dataset(tmp_path / "d", per_class=4)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ClearclassError, match="names a file") as error:
        train(data=str(data), out=str(tmp_path / "notes.txt"), **tiny_train_settings)
    assert error.value.as_option().startswith("--out ")
    with pytest.raises(RunError, match="not a clearclass run folder"):
        train(data=str(data), out=str(tmp_path), overwrite=True, **tiny_train_settings)
    with pytest.raises(ClearclassError, match="inside DATA"):
        train(data=str(data), out=str(data / "runs" / "one"), **tiny_train_settings)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("adapt_batchnorm", [False, True])
def test_frozen_epoch_changes_only_the_head_unless_batchnorm_adapts(
        tmp_path, tiny_train_settings, adapt_batchnorm):
    from clearclass.bundle import load_bundle
    from clearclass.model import create_model

    data = make_dataset(tmp_path / "d", per_class=12)  # a few steps: the head starts at zero
    run = train(data=str(data), out=str(tmp_path / "run"), adapt_batchnorm=adapt_batchnorm,
                **{**tiny_train_settings, "epochs": 0})
    torch.manual_seed(42)
    initial = create_model("test_resnet", 3, pretrained=False)[0].state_dict()
    trained = load_bundle(run.model_dir)[0].state_dict()
    assert torch.equal(trained["conv1.0.weight"], initial["conv1.0.weight"])
    assert not torch.equal(trained["fc.weight"], initial["fc.weight"])
    for key in ("conv1.1.weight", "conv1.1.running_mean"):  # a BatchNorm layer
        assert torch.equal(trained[key], initial[key]) != adapt_batchnorm, key


def test_micro_batches_give_the_whole_batch_gradient_with_fixed_statistics():
    import torch.nn.functional as F

    from clearclass.model import create_model, set_train_mode

    torch.manual_seed(0)
    model, _ = create_model("test_resnet", 3, pretrained=False)
    torch.nn.init.normal_(model.fc.weight, std=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    set_train_mode(model, adapt_batchnorm=False)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for xs, ys in zip(x.split(3), y.split(3)):
        (F.cross_entropy(model(xs), ys) * len(ys) / len(y)).backward()
    for a, b in zip(whole, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-5)


def test_config_rejects_bad_settings_with_the_reason():
    with pytest.raises(ClearclassError, match="resize_method must be one of crop"):
        TrainConfig(data="x", resize_method="stretch")
    with pytest.raises(ClearclassError, match="validation_fraction"):
        TrainConfig(data="x", validation_fraction=1.5)
    with pytest.raises(ClearclassError, match="tfms is not a setting"):
        TrainConfig.from_dict({"data": "x", "tfms": 1})


def test_frozen_stages_keep_the_early_weights_while_the_rest_learns(tmp_path,
                                                                   tiny_train_settings):
    from clearclass.bundle import load_bundle
    from clearclass.model import create_model

    data = make_dataset(tmp_path / "d", per_class=12)
    run = train(data=str(data), out=str(tmp_path / "run"), frozen_stages=2,
                **{**tiny_train_settings, "freeze_epochs": 0})
    torch.manual_seed(42)
    initial = create_model("test_resnet", 3, pretrained=False)[0].state_dict()
    trained = load_bundle(run.model_dir)[0].state_dict()
    for key in ("conv1.0.weight", "conv1.1.weight", "conv1.1.running_mean",
                "layer1.0.conv1.weight"):  # the stem and stage 1 (stride 4)
        assert torch.equal(trained[key], initial[key]), key
    assert not torch.equal(trained["layer2.0.conv1.weight"], initial["layer2.0.conv1.weight"])
    # From random weights the default trains every layer.
    default = train(data=str(data), out=str(tmp_path / "run2"),
                    **{**tiny_train_settings, "freeze_epochs": 0})
    trained = load_bundle(default.model_dir)[0].state_dict()
    assert not torch.equal(trained["conv1.0.weight"], initial["conv1.0.weight"])


def test_more_frozen_stages_than_the_model_has_is_refused_before_training(
        tmp_path, tiny_train_settings):
    data = make_dataset(tmp_path / "d", per_class=4)
    with pytest.raises(SettingError, match="more than the 5 feature stages test_resnet has"):
        train(data=str(data), out=str(tmp_path / "run"), frozen_stages=6, **tiny_train_settings)
    assert not (tmp_path / "run").exists()


def test_warmup_size_resizes_the_unfrozen_warmup_steps_only(tmp_path, tiny_train_settings,
                                                             monkeypatch):
    seen = []
    normalize = loop_module.normalize

    def recording(images, mean, std):
        seen.append(images.shape[-1])
        return normalize(images, mean, std)

    monkeypatch.setattr(loop_module, "normalize", recording)
    data = make_dataset(tmp_path / "d", per_class=12)  # 29 training photos: 4 steps of 8
    run = train(data=str(data), out=str(tmp_path / "run"), warmup_size=16,
                **{**tiny_train_settings, "epochs": 2})
    steps = 4
    frozen, unfrozen = seen[:steps], seen[steps:]
    assert frozen == [32] * steps
    warmup = round(0.3 * 2 * steps)  # the learning rate's rise, over both unfrozen epochs
    assert unfrozen == [16] * warmup + [32] * (2 * steps - warmup)
    assert run.config.warmup_size == 16
    with pytest.raises(SettingError, match="warmup_size must be between 16 and "
                                           r"--item-resize \(32\)"):
        TrainConfig(data="x", item_resize=32, warmup_size=48)


def test_the_frozen_epochs_validation_is_the_saved_models(tmp_path, tiny_train_settings):
    # The frozen epoch validates through the fast copy of its frozen body; the figures must
    # be the whole model's, as `clearclass evaluate` computes them from the saved bundle.
    import clearclass

    data = make_dataset(tmp_path / "d", per_class=12)
    run = train(data=str(data), out=str(tmp_path / "run"), adapt_batchnorm=False,
                **{**tiny_train_settings, "epochs": 0})  # a frozen body, run forward only
    assert [r.stage for r in run.history] == ["frozen"]
    evaluation = clearclass.evaluate(run.run_dir, device="cpu")
    assert evaluation.accuracy == pytest.approx(run.history[0].accuracy, abs=1e-6)
    assert float(evaluation.losses.mean()) == pytest.approx(run.history[0].valid_loss,
                                                            abs=1e-4)


# --- --balance (issue 23) --------------------------------------------------------------------

def _imbalanced_photos(root, counts=(("red", 30), ("green", 8), ("blue", 5))):
    for c, (name, count) in enumerate(counts):
        for i in range(count):
            make_photo(root / name / f"{i:03d}.jpg", COLOURS[name], seed=100 * c + i)
    return root


@pytest.mark.slow  # two trainings
@pytest.mark.parametrize("balance", ["weights", "sampler"])
def test_balance_trains_through_the_command_line_and_is_recorded(tmp_path, balance):
    data = _imbalanced_photos(tmp_path / "photos")
    out = tmp_path / "run"
    result = run_cli("train", data, "--out", out, *tiny_options(balance=balance), "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["config"]["balance"] == balance
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 2 and all(float(r["train_loss"]) > 0 for r in rows)


def test_balance_is_a_setting_checked_like_the_others_and_older_runs_read_as_none():
    assert TrainConfig("x").balance == "none"
    assert TrainConfig.from_dict({"data": "x"}).balance == "none"  # config.json before it
    with pytest.raises(SettingError, match=r"one of none, weights, sampler; got 'wieghts'\. "
                                           "Did you mean weights\\?"):
        TrainConfig("x", balance="wieghts")
    with pytest.raises(SettingError, match="must be str"):
        TrainConfig("x", balance=True)


def test_validation_reports_the_plain_loss_whatever_the_class_weights():
    from clearclass import device as devices
    from clearclass.bundle import ModelInfo
    from clearclass.data.loader import PhotoBatches
    from clearclass.task import SINGLE_LABEL

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    pixels = [torch.randint(0, 255, (8, 8, 3), dtype=torch.uint8).numpy() for _ in range(12)]
    batches = PhotoBatches(pixels, [0] * 8 + [1] * 3 + [2], 8, "crop", 4, training=False)
    info = ModelInfo("linear", ["a", "b", "c"], ["a", "b", "c"], 8, "crop", (0.5,) * 3,
                     (0.5,) * 3)
    compute = devices.select("cpu", "fp32")
    weighted = SINGLE_LABEL.for_training("weights", batches.targets.tolist(), 3)
    assert loop_module.validate(model, batches, compute, info, task=weighted) == \
        loop_module.validate(model, batches, compute, info, task=SINGLE_LABEL)
