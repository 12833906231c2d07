"""Constraints: pixel statistics added to the loss (CLIPig's `constraints`).

Each constraint measures a value per image from the pixels `[P, 3, H, W]`; its loss term is
`weight * value`, or with thresholds one-sided hinges `weight * relu(value - below)` and
`weight * relu(above - value)`. All of it is differentiable (twice), so it can sit in the bake's loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.errors import UserError
from core.image_ops import border_mask, gaussian_blur
from core.registry import Configured, Param, Registry
from core.schedule import Ramp

CONSTRAINTS = Registry(
    "constraint",
    "Constraints",
    """
    The `constraints` of a recipe: penalties on plain pixel statistics, summed into each image's loss.
    Every constraint takes `weight`, `above` and `below`: with neither threshold the term is
    `weight * value`; `below: b` adds `weight * relu(value - b)` (keep the value below b);
    `above: a` adds `weight * relu(a - value)` (keep it above a).
    For per-channel statistics (`mean`, `std`, `border`) a threshold of three values (R G B) compares
    each channel and sums the three hinges; one value compares the average over the channels.
    """,
    common_params=(
        Param("weight", 1.0, "multiplier of the term", kind="float"),
        Param("above", None, "penalise values below this (one value, or R G B for per-channel statistics)",
              kind="floats", count=(1, 3)),
        Param("below", None, "penalise values above this (one value, or R G B for per-channel statistics)",
              kind="floats", count=(1, 3)),
    ),
)


@CONSTRAINTS.register(
    Param("kernel_size", 11, "gaussian kernel side in pixels (made odd)", kind="int", minimum=3),
    Param("sigma", None, "standard deviation; none derives it from the kernel size", kind="float", minimum=0),
)
def blur(pixels, values):
    """High-frequency energy: mean squared difference between the image and its gaussian blur.

    Penalising it blurs the areas CLIP does not care about while the interesting ones keep
    being sharpened by the CLIP loss.
    """
    blurred = gaussian_blur(pixels, values["kernel_size"], values["sigma"])
    return (pixels - blurred).pow(2).mean(dim=(1, 2, 3))


@CONSTRAINTS.register()
def saturation(pixels, values):
    """Mean HSV saturation, `(max - min) / max` over the channels (0 where the pixel is black)."""
    brightest = pixels.amax(dim=1)
    darkest = pixels.amin(dim=1)
    # clamp keeps the division finite; the where keeps black pixels at exactly 0.
    ratio = (brightest - darkest) / brightest.clamp_min(1e-8)
    return torch.where(brightest > 0, ratio, torch.zeros_like(ratio)).mean(dim=(1, 2))


@CONSTRAINTS.register(per_channel=True)
def mean(pixels, values):
    """Mean value of each channel."""
    return pixels.mean(dim=(2, 3))


@CONSTRAINTS.register(per_channel=True)
def std(pixels, values):
    """Standard deviation of each channel (the contrast), population form."""
    return pixels.std(dim=(2, 3), correction=0)


@CONSTRAINTS.register(
    Param("size", 2, "width of the border band in pixels", kind="int", minimum=1),
    Param("color", (0.0, 0.0, 0.0), "colour the border is compared with (one grey value or R G B)",
          kind="floats", count=(1, 3)),
    per_channel=True,
)
def border(pixels, values):
    """Mean absolute distance of each channel of the border band from `color`."""
    _, _, height, width = pixels.shape
    mask = border_mask(height, width, values["size"], pixels.device).to(pixels.dtype)
    color = pixels.new_tensor(values["color"]).view(1, -1, 1, 1)
    distance = (pixels - color).abs() * mask
    return distance.sum(dim=(2, 3)) / mask.sum()


def constraint_term(configured: Configured, pixels: torch.Tensor, progress: float) -> torch.Tensor:
    """The loss term `[P]` of one configured constraint (see the registry doc for the hinges)."""
    values = configured.values_at(progress)
    measured = configured.entry.function(pixels, values)
    weight = values["weight"]
    thresholds = [(name, values[name]) for name in ("above", "below") if values[name] is not None]
    if not thresholds:
        return weight * (measured.mean(dim=1) if measured.dim() == 2 else measured)
    total = torch.zeros(pixels.shape[0], device=pixels.device, dtype=pixels.dtype)
    for name, threshold in thresholds:
        if len(threshold) == 3:
            value = measured  # per channel: [P, 3], checked at build time
            bound = measured.new_tensor(threshold)[None, :]
        else:
            value = measured.mean(dim=1) if measured.dim() == 2 else measured
            bound = measured.new_tensor(threshold[0])
        hinge = torch.relu(value - bound) if name == "below" else torch.relu(bound - value)
        total = total + weight * (hinge.sum(dim=1) if hinge.dim() == 2 else hinge)
    return total


@dataclass(frozen=True)
class ConstraintSum:
    """Configured constraints; call with `(pixels, progress)` for the summed terms `[P]`."""

    items: tuple[Configured, ...]

    def __call__(self, pixels: torch.Tensor, progress: float) -> torch.Tensor:
        total = torch.zeros(pixels.shape[0], device=pixels.device, dtype=pixels.dtype)
        for configured in self.items:
            if configured.active(progress):
                total = total + constraint_term(configured, pixels, progress)
        return total


def build_constraints(
    config: list | None, total_steps: int | None = None
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """Parse a constraint config into `f(pixels [P,3,H,W], progress) -> Tensor [P]` (zeros if empty).

    `total_steps` is needed only when a `start`/`end` is given in steps.
    """
    items = tuple(CONSTRAINTS.configure_list(config, total_steps))
    for configured in items:
        for name in ("above", "below"):
            threshold = configured.values[name]
            if threshold is None or configured.entry.info.get("per_channel"):
                continue
            ends = (threshold.first, threshold.last) if isinstance(threshold, Ramp) else (threshold,)
            if any(len(end) == 3 for end in ends):
                raise UserError(
                    f"constraint '{configured.entry.name}' has one value per image; "
                    f"'{name}' takes one number, got {threshold}"
                )
    return ConstraintSum(items)
