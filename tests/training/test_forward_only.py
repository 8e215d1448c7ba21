from __future__ import annotations

import torch

from clearclass.model import create_model
from clearclass.training import forward_only as forward_only_module
from clearclass.training.forward_only import MIN_BATCHES, forward_only


def _model_and_batch():
    torch.manual_seed(0)
    model, _ = create_model("test_resnet", 3, pretrained=False)
    torch.nn.init.normal_(model.fc.weight, std=0.1)
    model.eval()
    return model, torch.randn(5, 3, 32, 32).contiguous(memory_format=torch.channels_last)


def test_onnx_runtime_gives_the_models_logits_and_features():
    model, x = _model_and_batch()
    with torch.no_grad():
        logits, features = model(x), model.forward_features(x)
    run = forward_only(model, False, x[:2], batches=MIN_BATCHES)
    assert run.__name__ == "run", "ONNX Runtime is used for a long enough pass"
    assert torch.allclose(run(x), logits, atol=1e-4)
    run = forward_only(model, True, x[:2], batches=MIN_BATCHES)
    assert torch.allclose(run(x), features, atol=1e-4)


def test_short_passes_and_failed_exports_stay_in_pytorch(monkeypatch):
    model, x = _model_and_batch()
    with torch.no_grad():
        logits = model(x)
    run = forward_only(model, False, x[:2], batches=MIN_BATCHES - 1)
    assert run.__name__ == "in_pytorch"
    assert torch.allclose(run(x), logits, atol=1e-5)

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot export")

    monkeypatch.setattr(forward_only_module, "export_module", refuse)
    run = forward_only(model, False, x[:2], batches=100)
    assert run.__name__ == "in_pytorch"
    assert torch.allclose(run(x), logits, atol=1e-5)
