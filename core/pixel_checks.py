"""Judge images by plain pixel statistics (hue and saturation), not by any CLIP.

A pixel counts as "coloured" when it is saturated and bright enough; it is then named after the colour of
core.scenes.COLOURS whose hue is nearest. Grey, white and black pixels (backgrounds, most noise) are
ignored. This works on drawn scenes and on noisy generated images alike.

    dominant_colour(image)                  # "red" (or None when almost nothing is coloured)
    colour_fraction(image, "blue", "left")  # fraction of the left half's pixels that are blue
    colour_in_half(image, "blue", "left")   # True when there is more blue on the left than on the right

Images are float tensors [3, H, W] in [0, 1].
"""

from __future__ import annotations

import torch

from core.scenes import COLOURS

# A pixel is coloured when its saturation (max - min) / max and its value (max) reach these.
MIN_SATURATION = 0.4
MIN_VALUE = 0.25

REGIONS = ("all", "left", "right", "top", "bottom")
OPPOSITE_HALF = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def hue_saturation_value(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in degrees [0, 360), saturation and value in [0, 1], each [H, W], of an RGB image [3, H, W]."""
    red, green, blue = image.float().clamp(0, 1)
    value, _ = image.float().clamp(0, 1).max(dim=0)
    minimum, _ = image.float().clamp(0, 1).min(dim=0)
    chroma = value - minimum
    safe_chroma = chroma.clamp_min(1e-8)
    hue = torch.where(value == red, ((green - blue) / safe_chroma) % 6,
                      torch.where(value == green, (blue - red) / safe_chroma + 2, (red - green) / safe_chroma + 4))
    hue = (60.0 * hue) % 360.0
    saturation = chroma / value.clamp_min(1e-8)
    return hue, saturation, value


def _colour_hues() -> torch.Tensor:
    """Hue (degrees) of each named colour, in the order of COLOURS."""
    rgb = torch.tensor(list(COLOURS.values()), dtype=torch.float32).T.reshape(3, len(COLOURS), 1) / 255.0
    hue, _, _ = hue_saturation_value(rgb)
    return hue[:, 0]


def colour_labels(image: torch.Tensor, smoothing: int = 3) -> torch.Tensor:
    """Per pixel [H, W]: the index into COLOURS of its nearest hue, or -1 for uncoloured pixels.

    The image is first box-blurred over `smoothing` x `smoothing` pixels: pixel noise on a grey background
    has random hues that would otherwise count as small amounts of every colour.
    """
    if smoothing > 1:
        image = torch.nn.functional.avg_pool2d(image.float()[None], smoothing, stride=1, padding=smoothing // 2,
                                               count_include_pad=False)[0]
    hue, saturation, value = hue_saturation_value(image)
    difference = (hue[None] - _colour_hues()[:, None, None]).abs()
    circular_distance = torch.minimum(difference, 360.0 - difference)  # hue wraps around at 360
    labels = circular_distance.argmin(dim=0)
    coloured = (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)
    return torch.where(coloured, labels, torch.full_like(labels, -1))


def _region(labels: torch.Tensor, region: str) -> torch.Tensor:
    """The part of a [H, W] map in `region` (all, left, right, top, bottom half)."""
    height, width = labels.shape
    if region == "all":
        return labels
    if region == "left":
        return labels[:, : width // 2]
    if region == "right":
        return labels[:, width - width // 2:]
    if region == "top":
        return labels[: height // 2]
    if region == "bottom":
        return labels[height - height // 2:]
    raise ValueError(f"unknown region {region!r}; use one of {REGIONS}")


def colour_fraction(image: torch.Tensor, colour: str, region: str = "all") -> float:
    """Fraction of the pixels in `region` (all, left, right, top, bottom) that are `colour`."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; known: {list(COLOURS)}")
    labels = _region(colour_labels(image), region)
    return (labels == list(COLOURS).index(colour)).float().mean().item()


def dominant_colour(image: torch.Tensor, min_fraction: float = 0.005) -> str | None:
    """The named colour covering most coloured pixels; None when under `min_fraction` of pixels are coloured."""
    labels = colour_labels(image)
    coloured = labels[labels >= 0]
    if coloured.numel() < min_fraction * labels.numel():
        return None
    counts = torch.bincount(coloured, minlength=len(COLOURS))
    return list(COLOURS)[int(counts.argmax())]


def colour_in_half(image: torch.Tensor, colour: str, side: str) -> bool:
    """True when `side` (left, right, top, bottom) has more `colour` than the opposite half."""
    if side not in OPPOSITE_HALF:
        raise ValueError(f"unknown side {side!r}; use one of {list(OPPOSITE_HALF)}")
    return colour_fraction(image, colour, side) > colour_fraction(image, colour, OPPOSITE_HALF[side])
