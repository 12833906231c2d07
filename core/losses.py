"""Losses of the pixel renderer: spherical distance to CLIP targets, total variation, range penalty.

All return one value per image ([P]) so a batch of prompts is one computation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`2·arcsin(‖x̂−ŷ‖/2)²` over the last dim: the squared great-circle distance (halved) of unit vectors."""
    chord = (F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).norm(dim=-1)
    # rounding can push the half chord of opposite vectors just past 1, outside arcsin's domain
    return chord.div(2).clamp(max=1.0).arcsin().pow(2).mul(2)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels, per image [P]."""
    down = (images[..., 1:, :] - images[..., :-1, :]).pow(2).mean(dim=(1, 2, 3))
    right = (images[..., :, 1:] - images[..., :, :-1]).pow(2).mean(dim=(1, 2, 3))
    return down + right


def range_penalty(images: torch.Tensor) -> torch.Tensor:
    """Mean squared excursion outside [0, 1], per image [P]."""
    return (images - images.clamp(0, 1)).pow(2).mean(dim=(1, 2, 3))
