"""Rendering variation for training a scenes CLIP: the same scene, drawn a little differently.

core/scenes.py draws every circle with the same geometry, every red with the same RGB value and every edge
with the same anti-aliasing. A model trained on those drawings alone learns them exactly and misreads
drawings that differ a little (a judge trained so read a third fewer shapes drawn by other code). This
module varies what a caption does not speak of, image by image: a small rotation, scale and squash about
the centre (small enough that left stays left), a blur, and a shift of brightness, contrast, saturation
and hue (small enough that a colour keeps its name).

    varied = augment(images, generator)    # images [B, 3, S, S] in [0, 1] -> the same shape, in [0, 1]
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROTATION_DEGREES = 12.0
SCALE_RANGE = (0.85, 1.15)
MAX_SQUASH = 0.12          # relative difference of the horizontal and vertical scale
MAX_BLUR_SIGMA = 0.7       # pixels, at 48 px
MAX_BRIGHTNESS = 0.12      # added to every channel
CONTRAST_RANGE = (0.75, 1.25)
SATURATION_RANGE = (0.7, 1.2)
MAX_HUE_TURN_DEGREES = 8.0  # colour names lie 20-50 degrees of hue apart


def _uniform(low: float, high: float, count: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _warp(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotate, scale and squash each image about its centre; the uncovered border repeats the edge pixels."""
    count = len(images)
    angle = torch.deg2rad(_uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, count, generator))
    scale = _uniform(*SCALE_RANGE, count, generator)
    squash = _uniform(-MAX_SQUASH, MAX_SQUASH, count, generator)
    # affine_grid maps output to input coordinates, so the inverse scale draws the picture larger.
    sx, sy = 1.0 / (scale * (1 + squash / 2)), 1.0 / (scale * (1 - squash / 2))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([sx * cos, -sx * sin, torch.zeros(count)], dim=1),
                         torch.stack([sy * sin, sy * cos, torch.zeros(count)], dim=1)], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _blur(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian blur of random width (0 to MAX_BLUR_SIGMA) per image, separable, 5 taps."""
    sigma = _uniform(1e-3, MAX_BLUR_SIGMA, len(images), generator)
    offsets = torch.arange(-2, 3, dtype=images.dtype)
    kernels = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # [B, 5]
    batch, channels, height, width = images.shape
    planes = batch * channels  # every channel of every image is convolved with its image's own kernel
    flat = images.reshape(1, planes, height, width)
    per_plane = kernels.repeat_interleave(channels, dim=0)
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), per_plane[:, None, None, :], groups=planes)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), per_plane[:, None, :, None], groups=planes)
    return flat.reshape(batch, channels, height, width)


def _recolour(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift brightness, contrast and saturation, and turn the hue a little, per image."""
    count = len(images)
    shape = (count, 1, 1, 1)
    grey = images.mean(dim=1, keepdim=True)
    saturation = _uniform(*SATURATION_RANGE, count, generator).view(shape)
    images = grey + saturation * (images - grey)
    # A hue turn is a rotation of the colour about the grey axis (1, 1, 1) / sqrt(3) (Rodrigues' formula).
    turn = torch.deg2rad(_uniform(-MAX_HUE_TURN_DEGREES, MAX_HUE_TURN_DEGREES, count, generator))
    axis = torch.full((3,), 1 / math.sqrt(3))
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    outer = torch.outer(axis, axis)
    rotation = (torch.cos(turn)[:, None, None] * torch.eye(3) + torch.sin(turn)[:, None, None] * cross
                + (1 - torch.cos(turn))[:, None, None] * outer)  # [B, 3, 3]
    images = torch.einsum("bij,bjhw->bihw", rotation, images)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _uniform(*CONTRAST_RANGE, count, generator).view(shape)
    brightness = _uniform(-MAX_BRIGHTNESS, MAX_BRIGHTNESS, count, generator).view(shape)
    return mean + contrast * (images - mean) + brightness


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`images` [B, 3, S, S] in [0, 1], each warped, blurred and recoloured at random; clamped to [0, 1]."""
    return _recolour(_blur(_warp(images, generator), generator), generator).clamp(0.0, 1.0)
