"""Adversarial images for training a guide whose gradients draw what it names.

A guide trained on clean scenes alone is easy to fool: pixel optimisation finds images the guide scores
higher than a clean drawing of the prompt, and they show little of it (measured with the first shipped
guide, mean over 32 views: 0.64 for an optimised "a red circle" against 0.33 for a drawn red circle).
Training on images pushed within a small L2 ball toward the wrong caption (projected gradient ascent, as in
Madry et al. 2018) makes the guide's input gradients follow real changes of colour, shape and position
(the "perceptually aligned gradients" of robust models, Santurkar et al. 2019).
"""
from __future__ import annotations

from typing import Callable

import torch


def _per_image_norm(tensor: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each image of a batch [B, ...], shaped to broadcast against it."""
    return tensor.flatten(1).norm(dim=1).view(-1, *([1] * (tensor.dim() - 1)))


def pgd_images(loss_of: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, radius: float, steps: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Images [B,3,H,W] in [0, 1] moved by at most `radius` (L2, per image) to raise `loss_of(images)`.

    Starts at a random point half way to the ball's edge, takes `steps` normalised gradient steps of
    2.5 · radius / steps and projects back onto the ball; the result is clamped to [0, 1] and detached.
    """
    if radius <= 0 or steps <= 0:
        return images.detach()
    images = images.detach()
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    delta = noise / (_per_image_norm(noise) + 1e-12) * (radius / 2)
    step_size = 2.5 * radius / steps
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of((images + delta).clamp(0, 1)), delta)
        with torch.no_grad():
            delta = delta + step_size * grad / (_per_image_norm(grad) + 1e-12)
            delta = delta * torch.clamp(radius / (_per_image_norm(delta) + 1e-12), max=1.0)
    return (images + delta).clamp(0, 1).detach()
