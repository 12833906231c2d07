"""Post-processing: direct pixel edits between optimisation steps (CLIPig's `postproc`).

They are not part of the loss: each returns new pixels computed under `no_grad`, which the
renderer writes into its pixel tensor after a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.image_ops import border_mask, gaussian_blur
from core.registry import Configured, Param, Registry

POSTPROC = Registry(
    "postproc",
    "Post-processing",
    """
    The `postproc` of a recipe: edits written straight into the pixels after each optimisation step,
    outside the loss. Like every entry they can be scheduled with `start`/`end`.
    """,
)


def quantize_pixels(pixels: torch.Tensor, levels: int) -> torch.Tensor:
    """Round values in [0, 1] to `levels` evenly spaced values (0 and 1 included); levels < 2 is a no-op."""
    if levels < 2:
        return pixels
    steps = levels - 1
    return torch.round(pixels.clamp(0, 1) * steps) / steps


@POSTPROC.register(
    Param("kernel_size", 3, "kernel side in pixels (made odd)", kind="int", minimum=1),
    Param("sigma", 0.5, "standard deviation in pixels", kind="float", minimum=0),
)
def blur(pixels, values):
    """Gaussian blur; a light one every step smooths away pixel noise."""
    return gaussian_blur(pixels, values["kernel_size"], values["sigma"])


@POSTPROC.register(
    Param("size", 1, "width of the border in pixels", kind="int", minimum=1),
    Param("color", (0.15, 0.1, 0.05), "colour of the border (one grey value or R G B)", kind="floats",
          count=(1, 3)),
)
def border(pixels, values):
    """Paint a border of `size` pixels, pushing the content away from the (repeating) edges."""
    _, _, height, width = pixels.shape
    mask = border_mask(height, width, values["size"], pixels.device)
    color = pixels.new_tensor(values["color"]).view(1, -1, 1, 1)
    return torch.where(mask, color, pixels)


@POSTPROC.register(
    Param("levels", 16, "number of values per channel", kind="int", minimum=2),
)
def quantize(pixels, values):
    """Round each channel to `levels` evenly spaced values between 0 and 1 (a pixel-art look)."""
    return quantize_pixels(pixels, values["levels"])


@POSTPROC.register(
    Param("min", 0.0, "lowest value", kind="float"),
    Param("max", 1.0, "highest value", kind="float"),
)
def clamp(pixels, values):
    """Clamp values into [min, max]."""
    return pixels.clamp(values["min"], values["max"])


@POSTPROC.register(
    Param("target", (0.5,), "mean to shift to, one value or one per channel (R G B)", kind="floats",
          count=(1, 3)),
)
def mean(pixels, values):
    """Shift each image so that its mean (overall, or per channel with R G B) equals `target`."""
    target = pixels.new_tensor(values["target"])
    if target.numel() == 3:
        current = pixels.mean(dim=(2, 3), keepdim=True)
        return pixels + (target.view(1, 3, 1, 1) - current)
    current = pixels.mean(dim=(1, 2, 3), keepdim=True)
    return pixels + (target.view(1, 1, 1, 1) - current)


@dataclass(frozen=True)
class PostprocChain:
    """Configured post-processing; call with `(pixels, progress)` for the edited pixels."""

    items: tuple[Configured, ...]

    def __call__(self, pixels: torch.Tensor, progress: float) -> torch.Tensor:
        with torch.no_grad():
            result = pixels.detach().clone()
            for configured in self.items:
                if configured.active(progress):
                    result = configured.entry.function(result, configured.values_at(progress))
        return result


def build_postproc(
    config: list | None, total_steps: int | None = None
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """Parse a postproc config into `f(pixels, progress) -> new pixels` (no grad; a copy when empty).

    `total_steps` is needed only when a `start`/`end` is given in steps.
    """
    return PostprocChain(tuple(POSTPROC.configure_list(config, total_steps)))
