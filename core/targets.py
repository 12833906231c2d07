"""Targets: a prompt, an image file or weighted targets (`a lemon:1 | text:-0.5`) as one unit embedding,
and what a target is called in file names and logs."""
from __future__ import annotations

from pathlib import Path

import torch

from core.errors import UserError
from core.images import load_image
from core.models import Clip
from core.prompts import combine_targets, names_image_file, parse_targets


def encode_target(clip: Clip, text: str, truncate: bool = False, extra: str = "") -> torch.Tensor:
    """The unit embedding [D] of a target: text, an image file, or weighted targets (`a:1 | b:-0.5`).

    `extra` (a recipe's `targets`) adds weighted targets to it.
    """
    if not text or not text.strip():
        raise UserError("empty prompt")
    if _is_one_image(text):
        if not Path(text).is_file():
            raise UserError(f"image file not found: {text}")
        if not extra:
            return encode_image_files(clip, [text])[0]
    targets = parse_targets(f"{text} | {extra}" if extra else text)
    embeddings = []
    for target in targets:
        if target.kind == "image":
            embeddings.append(encode_image_files(clip, [target.value])[0])
        else:
            embeddings.append(clip.encode_text([target.value], truncate)[0])
    combined = combine_targets(torch.stack(embeddings), torch.tensor([t.weight for t in targets]))
    return torch.nn.functional.normalize(combined.to(clip.device), dim=-1)


def encode_image_files(clip: Clip, files: list[str]) -> torch.Tensor:
    """Unit-norm embeddings [N, D] of image files (a target given as an image)."""
    images = torch.stack([load_image(file, clip.image_size) for file in files]).to(clip.device)
    with torch.no_grad():
        return torch.nn.functional.normalize(clip.encode_images(images), dim=-1)


def target_label(text: str) -> str:
    """What a target is called in file names and logs (an image target by its file name)."""
    return Path(text).stem if _is_one_image(text) else text.strip()


def _is_one_image(text: str) -> bool:
    """Whether a target is one image file alone (not weighted targets that include one)."""
    return names_image_file(text) and "|" not in text
