"""Losses of the pixel renderer (spherical distance to CLIP targets, total variation, range penalty) and of a
bake's critic (caption contrast).

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


def caption_contrast(images: torch.Tensor, captions: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Cross-entropy of the first caption of each group among the group's captions, per image [N].

    images [N, V, D]: V views of each image; captions [N, G, C, D]: G groups of up to C captions, the one the
    image should match first; mask [N, G, C]: which captions are real. The loss is averaged over the views
    and over the groups with a caption; an image without any group scores 0.
    """
    logits = scale * torch.einsum("nvd,ngcd->nvgc", F.normalize(images, dim=-1), F.normalize(captions, dim=-1))
    # A finite fill, not -inf: a group with no caption would otherwise give NaN gradients through logsumexp.
    logits = logits.masked_fill(~mask[:, None], -1e4)
    entropy = logits.logsumexp(dim=-1) - logits[..., 0]  # [N, V, G]
    groups = mask[:, :, 0]  # [N, G]
    entropy = torch.where(groups[:, None], entropy, torch.zeros_like(entropy))
    return (entropy.sum(dim=2) / groups.sum(dim=1).clamp(min=1)[:, None]).mean(dim=1)
