"""Batch augmentation: random flips, rotations, zooms, perspective warps and lighting.

The `standard` preset is fastai's `aug_transforms()` with its defaults: each photo of a
batch gets its own draw, and all the geometry (flip, rotate, zoom, warp) is composed into
one homography and resampled once with `grid_sample` (bilinear, reflected at the edges), so a
photo is interpolated once, not once per transform. The batch arrives as uint8 and can sit
on any device; the random draws are made on the CPU from a seeded generator, so a seed
gives the same augmentations on every device.

Written here rather than taken from torchvision or kornia because those apply one draw per
batch (torchvision v2) or resample once per transform (kornia), and both solve a linear
system for the perspective warp; `torch.linalg.solve` is what breaks fastai on Apple MPS.
The warp here uses the closed-form square-to-quadrilateral mapping (Heckbert, 1989), and
the edges are mirrored by folding the coordinates (MPS has no reflection padding for
`grid_sample`); on the device only elementwise operations, a batched matrix product and
`grid_sample` run, all native on CUDA and MPS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

AUGMENT_PRESETS = ("standard", "none")


@dataclass(frozen=True)
class AugmentSettings:
    """What `batch_augment` does to each photo; the defaults are fastai's `aug_transforms()`."""

    flip_p: float = 0.5  # probability of a horizontal flip
    max_rotate: float = 10.0  # degrees, either way
    min_zoom: float = 1.0  # 1.0 = no zoom out
    max_zoom: float = 1.1  # zoom in by up to 10%
    max_warp: float = 0.2  # perspective warp magnitude, in half-widths of the image
    max_lighting: float = 0.2  # brightness and contrast change
    p_affine: float = 0.75  # probability of each of rotate, zoom and warp
    p_lighting: float = 0.75  # probability of each of brightness and contrast

    def scaled(self, strength: float) -> AugmentSettings:
        """Stronger or weaker augmentation, as fastai's `mult` (rotate, lighting, warp)."""
        if strength < 0:
            raise ValueError(f"augment strength must be >= 0; got {strength}")
        return replace(
            self,
            max_rotate=self.max_rotate * strength,
            max_lighting=min(self.max_lighting * strength, 0.95),
            max_warp=self.max_warp * strength,
        )


def augment_settings(preset: str, strength: float = 1.0) -> AugmentSettings | None:
    """The settings of a named preset (`standard` or `none`) at a given strength."""
    if preset == "none":
        return None
    if preset == "standard":
        return AugmentSettings().scaled(strength)
    raise ValueError(f"batch augment preset must be one of {AUGMENT_PRESETS}; got {preset!r}")


def batch_augment(
    images: torch.Tensor, settings: AugmentSettings, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Augment a batch of square uint8 images (N, 3, H, W); returns floats in [0, 1]."""
    n = images.shape[0]
    x = images.float().div_(255.0)
    draws = _draw(n, settings, generator)
    matrix = draws["geometry"].to(x.device)
    if not torch.equal(draws["geometry"], torch.eye(3).expand(n, 3, 3)):
        x = _warp(x, matrix)
    if draws["lighting"]:
        brightness = draws["brightness"].to(x.device).view(n, 1, 1, 1)
        contrast = draws["contrast"].to(x.device).view(n, 1, 1, 1)
        # fastai's lighting: shift and scale in logit space, so values stay within (0, 1).
        x = torch.sigmoid((_logit(x) + _logit(brightness)) * contrast)
    return x


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 images (or floats in [0, 1]) to the model's input scale, channels_last."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
    return ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


def _draw(n: int, s: AugmentSettings, gen: torch.Generator | None) -> dict:
    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=gen, dtype=torch.float64) * (high - low) + low

    def happens(p: float) -> torch.Tensor:
        return torch.rand(n, generator=gen, dtype=torch.float64) < p

    flip = torch.where(happens(s.flip_p), -1.0, 1.0)
    theta = torch.where(happens(s.p_affine), uniform(-s.max_rotate, s.max_rotate), 0.0)
    theta = theta * (math.pi / 180)
    zoom = torch.where(happens(s.p_affine), uniform(s.min_zoom, s.max_zoom), 1.0)
    zoom_x, zoom_y = uniform(0, 1), uniform(0, 1)  # where the zoom is centred
    warp_x = torch.where(happens(s.p_affine), uniform(-s.max_warp, s.max_warp), 0.0)
    warp_y = torch.where(happens(s.p_affine), uniform(-s.max_warp, s.max_warp), 0.0)
    low, high = 0.5 * (1 - s.max_lighting), 0.5 * (1 + s.max_lighting)
    brightness = torch.where(happens(s.p_lighting), uniform(low, high), 0.5)
    log_c = math.log(1 - s.max_lighting) if s.max_lighting < 1 else -10.0
    contrast = torch.where(happens(s.p_lighting), uniform(log_c, -log_c).exp(), 1.0)

    flip_m = _affine(flip, torch.zeros(n), torch.zeros(n), torch.ones(n), torch.zeros(n))
    cos, sin = theta.cos(), theta.sin()
    rotate_m = _affine(cos, sin, torch.zeros(n), cos, torch.zeros(n), c=-sin)
    inv = 1 / zoom
    zoom_m = _affine(inv, torch.zeros(n), (1 - inv) * (2 * zoom_x - 1), inv,
                     (1 - inv) * (2 * zoom_y - 1))
    affine = flip_m @ rotate_m @ zoom_m
    geometry = perspective_warp_matrix(warp_x, warp_y) @ affine
    lighting = bool((brightness != 0.5).any() or (contrast != 1.0).any())
    return {
        "geometry": geometry.float(),
        "brightness": brightness.float(),
        "contrast": contrast.float(),
        "lighting": lighting,
    }


def _affine(
    a: torch.Tensor, b: torch.Tensor, tx: torch.Tensor, d: torch.Tensor, ty: torch.Tensor,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch of 3x3 matrices [[a, b, tx], [c, d, ty], [0, 0, 1]] (c defaults to 0)."""
    n = a.shape[0]
    m = torch.zeros(n, 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a, b, tx
    m[:, 1, 0] = 0 if c is None else c
    m[:, 1, 1], m[:, 1, 2], m[:, 2, 2] = d, ty, 1
    return m


def perspective_warp_matrix(warp_x: torch.Tensor, warp_y: torch.Tensor) -> torch.Tensor:
    """Homographies of fastai's `Warp`, in closed form (no linear solve).

    fastai moves the corners of the [-1, 1] square to a quadrilateral Q and samples the
    output at the homography taking Q back onto the square. Here the square-to-Q map is
    built in closed form and inverted by its adjugate (a homography is defined up to scale).
    """
    xt, yt = warp_x.double(), warp_y.double()
    # Q's corners for the unit-square corners (0,0), (1,0), (1,1), (0,1), i.e. for the
    # [-1, 1] corners (-1,-1), (1,-1), (1,1), (-1,1), as fastai's `_WarpCoord` places them.
    x0, y0 = -1 - yt, -1 - xt
    x1, y1 = 1 + yt, -1 + xt
    x2, y2 = 1 - yt, 1 - xt
    x3, y3 = -1 + yt, 1 + xt
    sum_x, sum_y = x0 - x1 + x2 - x3, y0 - y1 + y2 - y3
    dx1, dx2, dy1, dy2 = x1 - x2, x3 - x2, y1 - y2, y3 - y2
    den = dx1 * dy2 - dx2 * dy1
    g = (sum_x * dy2 - dx2 * sum_y) / den
    h = (dx1 * sum_y - sum_x * dy1) / den
    unit_to_q = torch.stack(
        [
            torch.stack([x1 - x0 + g * x1, x3 - x0 + h * x3, x0], -1),
            torch.stack([y1 - y0 + g * y1, y3 - y0 + h * y3, y0], -1),
            torch.stack([g, h, torch.ones_like(g)], -1),
        ],
        -2,
    )
    # From [-1, 1] to the unit square, then on to Q.
    to_unit = torch.tensor([[0.5, 0, 0.5], [0, 0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
    square_to_q = unit_to_q @ to_unit
    return _normalized(_adjugate(square_to_q))


def _adjugate(m: torch.Tensor) -> torch.Tensor:
    r0, r1, r2 = m[..., 0, :], m[..., 1, :], m[..., 2, :]
    cols = [torch.linalg.cross(r1, r2), torch.linalg.cross(r2, r0), torch.linalg.cross(r0, r1)]
    return torch.stack(cols, dim=-1)


def _normalized(h: torch.Tensor) -> torch.Tensor:
    return h / h[..., 2:3, 2:3]


def _warp(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    n, _, height, width = x.shape
    ys = torch.linspace(-1, 1, height, device=x.device)
    xs = torch.linspace(-1, 1, width, device=x.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], -1).view(1, -1, 3)
    mapped = points @ matrix.transpose(1, 2)  # (n, h*w, 3)
    coords = mapped[..., :2] / mapped[..., 2:3]
    coords = _reflected(coords.view(n, height, width, 2))
    # The coordinates are reflected into the image here, so "border" samples what
    # "reflection" would: Apple MPS has no grid_sample kernel for reflection padding.
    return F.grid_sample(x, coords, mode="bilinear", padding_mode="border", align_corners=True)


def _reflected(coords: torch.Tensor) -> torch.Tensor:
    """Coordinates outside [-1, 1] mirrored back in at the edges, as grid_sample's
    reflection padding does with align_corners=True (a period of 4)."""
    folded = torch.remainder(coords + 1, 4)
    return torch.where(folded > 2, 4 - folded, folded) - 1


def _logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(1e-7, 1 - 1e-7)
    return torch.log(x / (1 - x))


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """A batch (uint8, or floats in [0, 1]) resized to `size` pixels on its longer side,
    as floats in [0, 1], antialiased as a photo decoded at that size would be."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
    height, width = x.shape[-2:]
    scale = size / max(height, width)
    return F.interpolate(x, size=(round(height * scale), round(width * scale)),
                         mode="bilinear", antialias=True, align_corners=False)
