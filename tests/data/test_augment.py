from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from clearclass.data.augment import (
    AugmentSettings,
    augment_settings,
    batch_augment,
    normalize,
    perspective_warp_matrix,
)


def _reference_warp(warp_x: torch.Tensor, warp_y: torch.Tensor) -> torch.Tensor:
    """fastai's way: solve the 8x8 system mapping the warped corners back onto the square."""
    orig = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=torch.float64)
    rows = []
    for xt, yt in zip(warp_x.tolist(), warp_y.tolist()):
        targ = torch.tensor([[-1 - yt, -1 - xt], [-1 + yt, 1 + xt], [1 + yt, -1 + xt],
                             [1 - yt, 1 - xt]], dtype=torch.float64)
        a, b = [], []
        for (px, py), (qx, qy) in zip(orig.tolist(), targ.tolist()):
            a.append([qx, qy, 1, 0, 0, 0, -px * qx, -px * qy])
            a.append([0, 0, 0, qx, qy, 1, -py * qx, -py * qy])
            b.extend([px, py])
        coeffs = torch.linalg.solve(torch.tensor(a, dtype=torch.float64),
                                  torch.tensor(b, dtype=torch.float64))
        rows.append(torch.cat([coeffs, torch.ones(1, dtype=torch.float64)]).view(3, 3))
    return torch.stack(rows)


def test_closed_form_warp_equals_fastais_solved_one():
    gen = torch.Generator().manual_seed(0)
    warp_x = (torch.rand(16, generator=gen, dtype=torch.float64) - 0.5) * 0.6
    warp_y = (torch.rand(16, generator=gen, dtype=torch.float64) - 0.5) * 0.6
    ours = perspective_warp_matrix(warp_x, warp_y)
    reference = _reference_warp(warp_x, warp_y)
    points = torch.cat([torch.rand(16, 50, 2, dtype=torch.float64) * 2 - 1,
                        torch.ones(16, 50, 1, dtype=torch.float64)], -1)
    a = points @ ours.transpose(1, 2)
    b = points @ reference.transpose(1, 2)
    assert torch.allclose(a[..., :2] / a[..., 2:], b[..., :2] / b[..., 2:], atol=1e-9)


def test_standard_preset_is_fastais_aug_transforms_defaults():
    s = augment_settings("standard")
    assert (s.flip_p, s.max_rotate, s.min_zoom, s.max_zoom, s.max_warp, s.max_lighting,
            s.p_affine, s.p_lighting) == (0.5, 10.0, 1.0, 1.1, 0.2, 0.2, 0.75, 0.75)
    strong = augment_settings("standard", strength=2.0)
    assert (strong.max_rotate, strong.max_warp, strong.max_lighting) == (20.0, 0.4, 0.4)
    assert strong.max_zoom == 1.1  # fastai's mult leaves zoom alone
    assert augment_settings("none") is None
    with pytest.raises(ValueError, match="standard"):
        augment_settings("heavy")


def test_augmentation_never_calls_linalg_solve(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.linalg.solve breaks on Apple MPS")

    monkeypatch.setattr(torch.linalg, "solve", refuse)
    images = torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8)
    out = batch_augment(images, AugmentSettings(), torch.Generator().manual_seed(1))
    assert out.shape == (8, 3, 24, 24)


def test_no_op_settings_give_back_the_images():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    off = AugmentSettings(flip_p=0, p_affine=0, p_lighting=0)
    out = batch_augment(images, off, torch.Generator().manual_seed(0))
    assert torch.allclose(out * 255, images.float(), atol=1e-3)


def test_flip_only_mirrors_each_photo():
    images = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).remainder(256)
    images = images.to(torch.uint8).view(4, 3, 8, 8)
    flip = AugmentSettings(flip_p=1.0, p_affine=0, p_lighting=0)
    out = batch_augment(images, flip, torch.Generator().manual_seed(0))
    assert torch.allclose(out * 255, images.flip(-1).float(), atol=1e-3)


def test_each_photo_gets_its_own_draw_and_seeds_repeat():
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(6, 1, 1, 1)
    a = batch_augment(images, AugmentSettings(), torch.Generator().manual_seed(3))
    b = batch_augment(images, AugmentSettings(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    distinct = {tuple(x.flatten()[:50].tolist()) for x in a}
    assert len(distinct) > 1
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_rotation_keeps_the_centre_pixel():
    images = torch.zeros(2, 3, 33, 33, dtype=torch.uint8)
    images[:, :, 16, 16] = 255
    rotate = replace(AugmentSettings(flip_p=0, p_lighting=0, max_zoom=1.0, max_warp=0.0),
                     p_affine=1.0, max_rotate=30)
    out = batch_augment(images, rotate, torch.Generator().manual_seed(0))
    assert out[:, :, 16, 16].min() > 0.99


def test_lighting_changes_brightness_within_bounds():
    images = torch.full((64, 3, 4, 4), 128, dtype=torch.uint8)
    light = AugmentSettings(flip_p=0, p_affine=0, p_lighting=1.0)
    out = batch_augment(images, light, torch.Generator().manual_seed(0)).mean(dim=(1, 2, 3))
    # brightness 0.4..0.6 and contrast 0.8..1.25 in logit space around 128/255
    assert out.min() > 0.3 and out.max() < 0.7
    assert out.std() > 0.02


def test_normalize_uses_mean_and_std_and_is_channels_last():
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    x = normalize(images, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(x, torch.ones_like(x))
    assert x.is_contiguous(memory_format=torch.channels_last)
    zero = normalize(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), (0.485, 0.456, 0.406),
                     (0.229, 0.224, 0.225))
    assert math.isclose(zero[0, 0, 0, 0].item(), -0.485 / 0.229, rel_tol=1e-5)


def test_on_the_device_only_operations_apple_mps_runs_natively():
    """The seed's author needed PYTORCH_ENABLE_MPS_FALLBACK for fastai's augmentations
    (`aten::_linalg_solve_ex`), and MPS has no reflection padding in grid_sample. Run on
    PyTorch's "meta" device, the operations batch_augment sends to the device are recorded:
    no linear algebra, no float64 (MPS has none), grid_sample with border padding."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from clearclass.data.augment import AugmentSettings, batch_augment, normalize

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            if any(t.device.type == "meta" for t in tensors):
                self.calls.append((func, args, {t.dtype for t in tensors}))
            return out

    images = torch.zeros(8, 3, 32, 32, dtype=torch.uint8, device="meta")
    with Record() as record:
        normalize(batch_augment(images, AugmentSettings(max_warp=0.4),
                                torch.Generator().manual_seed(0)), (0.5,) * 3, (0.2,) * 3)
    names = {func.__name__.split(".")[0] for func, _, _ in record.calls}
    assert "grid_sampler_2d" in names and not any("linalg" in n or "solve" in n for n in names)
    dtypes = {dtype for *_, found in record.calls for dtype in found}
    assert dtypes <= {torch.uint8, torch.float32, torch.bool}
    border = 1  # grid_sampler_2d(input, grid, interpolation, padding_mode, align_corners)
    assert all(args[3] == border for func, args, _ in record.calls
               if func.__name__.startswith("grid_sampler_2d"))


def test_folded_coordinates_sample_what_reflection_padding_does():
    import torch.nn.functional as F

    from clearclass.data.augment import _reflected

    x = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(1))
    grid = torch.rand(2, 17, 23, 2, generator=torch.Generator().manual_seed(2)) * 7 - 3.5
    reflection = F.grid_sample(x, grid, padding_mode="reflection", align_corners=True)
    folded = F.grid_sample(x, _reflected(grid), padding_mode="border", align_corners=True)
    assert torch.allclose(reflection, folded, atol=1e-5)
