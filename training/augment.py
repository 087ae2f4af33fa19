"""Training augmentation: MNIST digits made to look like what the service's preprocessing leaves of
a photo or scan (service/inputs/digit_finder.py): strokes of another pen's width, digits turned,
sheared, shifted and unevenly written, softened by blur.

Everything runs on whole batches on their device and draws from a CPU generator, so a GPU run sees
the same augmentation as a CPU one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIDE = 28
MAX_TURN_DEGREES = 15.0
ZOOM = (0.85, 1.1)
MAX_SHEAR = 0.2  # a page seen at a slight angle
MAX_SHIFT_PX = 2.0  # the centre of mass is centred, so shifts are small
MAX_WOBBLE_PX = 1.5  # elastic distortion: a hand's unevenness, smooth over a few pixels
WOBBLE_GRID = 4  # control points each way: the smoothness of the distortion
PEN_CHANCE = 0.6  # chance of another pen...
PEN_LEVEL = (0.15, 0.6)  # ... cutting the strokes' soft profile at this level (MNIST's edge: ~0.35)...
PEN_EDGE = 0.15  # ... with an edge this soft...
PEN_WIDENING = 2  # ... and widening them by up to this many px at twice MNIST's size
BLUR_CHANCE = 0.3
BLUR_SIGMA = (0.4, 1.0)  # in MNIST pixels: a small or out-of-focus digit
BLUR_RADIUS = 2


def photo_like(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """float [N, 1, 28, 28] in [0, 1] -> the same digits, each with its own random pen, geometry and
    blur, brightest ink at 1 as the preprocessing leaves it (it scales by the ink's peak contrast)."""
    images = _blur(_geometry(_pen(images, generator), generator), generator)
    peak = images.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
    return (images / peak).clamp_(0, 1)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _pen(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The digit redrawn with another pen, at twice MNIST's resolution: its strokes cut at a random
    level of their soft profile (a high level leaves a fine liner's strokes, a low one a felt tip's),
    then widened by up to PEN_WIDENING px (a marker)."""
    n = images.shape[0]
    redrawn = torch.rand(n, generator=generator) < PEN_CHANCE
    level = _uniform(n, *PEN_LEVEL, generator).to(images.device).view(n, 1, 1, 1)
    widen = torch.randint(0, PEN_WIDENING + 1, (n,), generator=generator)
    fine = F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
    fine = ((fine - level) / PEN_EDGE + 0.5).clamp(0, 1)
    for radius in range(1, PEN_WIDENING + 1):  # each image widened by its own radius
        chosen = (widen >= radius).to(images.device).view(n, 1, 1, 1)
        fine = torch.where(chosen, F.max_pool2d(fine, 3, stride=1, padding=1), fine)
    pen = F.avg_pool2d(fine, 2)
    return torch.where(redrawn.to(images.device).view(n, 1, 1, 1), pen, images)


def _geometry(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One resampling for a random turn, zoom, shear, shift and a smooth elastic wobble."""
    n = images.shape[0]
    angle = _uniform(n, -1, 1, generator) * math.radians(MAX_TURN_DEGREES)
    zoom = _uniform(n, *ZOOM, generator)
    shear = _uniform(n, -MAX_SHEAR, MAX_SHEAR, generator)
    shift = _uniform(2 * n, -1, 1, generator).view(n, 2) * (MAX_SHIFT_PX * 2 / SIDE)  # grid units: 2 per side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    rows = (
        torch.stack([cos, -sin + shear * cos, shift[:, 0]], 1),
        torch.stack([sin, cos + shear * sin, shift[:, 1]], 1),
    )
    theta = torch.stack(rows, 1)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    wobble = torch.randn(n, 2, WOBBLE_GRID, WOBBLE_GRID, generator=generator)
    wobble = wobble * _uniform(n, 0, MAX_WOBBLE_PX * 2 / SIDE, generator).view(n, 1, 1, 1)
    wobble = F.interpolate(wobble.to(images.device), size=(SIDE, SIDE), mode="bicubic", align_corners=True)
    grid = grid + wobble.permute(0, 2, 3, 1)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")


def _blur(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian blur of its own width for some digits, one grouped convolution for the batch."""
    n = images.shape[0]
    sigma = _uniform(n, *BLUR_SIGMA, generator)
    blurred = torch.rand(n, generator=generator) < BLUR_CHANCE
    offsets = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=torch.float32)
    kernel_1d = torch.exp(-(offsets**2) / (2 * sigma.view(n, 1) ** 2))
    kernel_1d = kernel_1d / kernel_1d.sum(1, keepdim=True)
    identity = (offsets == 0).to(torch.float32).expand(n, -1)
    kernel_1d = torch.where(blurred.view(n, 1), kernel_1d, identity)
    kernels = (kernel_1d[:, :, None] * kernel_1d[:, None, :]).unsqueeze(1).to(images.device)
    out = F.conv2d(images.view(1, n, SIDE, SIDE), kernels, padding=BLUR_RADIUS, groups=n)
    return out.view(n, 1, SIDE, SIDE)
