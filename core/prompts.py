"""Weighted targets: a prompt made of several texts and images, each with a weight.

Targets are separated by `|`; a trailing `:number` is the target's weight (default 1), e.g.
`a lemon on a table | text, words:-0.5 | photo.png:0.3`. Negative weights push the image away.
A colon right after a digit stays part of the text, so ratios and times (`ratio 3:2`, `12:30`) are
not read as weights; neither is a colon not followed by a number (`a:b`). A target that is an
existing `.png`, `.jpg`, `.jpeg` or `.webp` file is an image target; such a file name without
spaces that does not exist is an error. A weight is a number from -1000 to 1000 (`1e999` is refused, not
read as infinity); a prompt has at most 2,000 characters and 32 targets (`core.limits`). The embeddings
are combined as the weighted sum of the unit-normalised embeddings (`combine_targets`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from core.errors import UserError, cut, quote
from core.limits import MAX_PROMPT_CHARS, MAX_TARGET_WEIGHT, MAX_TARGETS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# `text:weight` at the end of a target; the colon must not follow a digit (ratios, times).
WEIGHT_PATTERN = re.compile(
    r"^(?P<text>.*?(?<![0-9]))\s*:\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*$", re.DOTALL
)


def names_image_file(text: str) -> bool:
    """Whether `text` ends like an image file name (the file may or may not exist)."""
    return text.lower().endswith(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Target:
    """One target: `kind` is "text" or "image" (then `value` is the file path)."""

    kind: str
    value: str
    weight: float = 1.0


def parse_target(part: str) -> Target:
    """One `|`-separated target: text or image path with an optional trailing `:weight`."""
    text = part.strip()
    weight = 1.0
    match = WEIGHT_PATTERN.match(text)
    if match:
        text, weight = match.group("text").strip(), float(match.group("weight"))
        if not abs(weight) <= MAX_TARGET_WEIGHT:  # also inf and nan (1e999 reads as inf)
            raise UserError(f"the weight {quote(match.group('weight'), 30)} of {quote(text)} is not a number from "
                            f"-{MAX_TARGET_WEIGHT:g} to {MAX_TARGET_WEIGHT:g}")
    if not text:
        raise UserError(f"empty target in {quote(part.strip())}; write targets like 'a lemon:1 | text:-0.5'")
    if names_image_file(text):
        path = Path(text).expanduser()
        if os.path.isfile(path):  # os.path: False, not an error, for an over-long name
            return Target("image", str(path), weight)
        if not re.search(r"\s", text):
            raise UserError(f"image target not found: {cut(text)}")
    return Target("text", text, weight)


def parse_targets(prompt: str) -> list[Target]:
    """Parse `"a lemon:1 | text, words:-0.5"` into targets; an empty target is a UserError."""
    if prompt is None or not prompt.strip():
        raise UserError("the prompt is empty")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line (kept as lone surrogates)
        raise UserError(f"the prompt {quote(prompt, 40)} is not valid UTF-8 text") from None
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt {quote(prompt, 40)} is longer than {MAX_PROMPT_CHARS} characters")
    parts = prompt.split("|")
    if len(parts) > MAX_TARGETS:
        raise UserError(f"the prompt {quote(prompt, 40)} has {len(parts)} targets; at most {MAX_TARGETS}")
    return [parse_target(part) for part in parts]


def combine_targets(embeddings: torch.Tensor, weights) -> torch.Tensor:
    """One target embedding `[D]` from target embeddings `[T, D]` and weights `[T]`.

    It is the weighted sum of the unit-normalised embeddings, so every target counts by its weight
    alone, whatever its embedding norm; a negative weight subtracts its direction and so pushes the
    image away from it. The sum is not re-normalised (spherical losses normalise anyway).
    The weights must add up to more than 0, otherwise there is nothing to move toward.
    """
    weights = torch.as_tensor(weights, dtype=embeddings.dtype, device=embeddings.device)
    if embeddings.dim() != 2 or weights.shape != embeddings.shape[:1]:
        raise ValueError(f"expected embeddings [T, D] and weights [T], got {tuple(embeddings.shape)} "
                         f"and {tuple(weights.shape)}")
    if float(weights.sum()) <= 0:
        raise UserError("the target weights add up to 0 or less; give at least one positive target")
    return (F.normalize(embeddings, dim=-1) * weights[:, None]).sum(dim=0)
