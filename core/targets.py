"""Targets: a prompt, an image file or weighted targets (`a lemon:1 | text:-0.5`) as one unit embedding,
and what a target is called in the store, file names and logs (an image by its name and content)."""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

import torch

from core.errors import UserError, cut, quote
from core.images import check_image_file, load_image
from core.limits import MAX_IMAGE_FILE_BYTES
from core.models import Clip
from core.prompts import combine_targets, names_image_file, parse_targets


def encode_target(clip: Clip, text: str, truncate: bool = False, extra: str = "") -> torch.Tensor:
    """The unit embedding [D] of a target: text, an image file, or weighted targets (`a:1 | b:-0.5`).

    `extra` (a recipe's `targets`) adds weighted targets to it.
    """
    if not text or not text.strip():
        raise UserError("empty prompt")
    if _is_one_image(text):
        check_image_file(text)
        if not extra:
            return encode_image_files(clip, [text])[0]
    targets = parse_targets(f"{text} | {extra}" if extra else text)
    for target in targets:  # every image checked (size, pixels) before any is encoded
        if target.kind == "image":
            check_image_file(target.value)
    embeddings = []
    for target in targets:
        if target.kind == "image":
            embeddings.append(encode_image_files(clip, [target.value])[0])
        else:
            embeddings.append(clip.encode_text([target.value], truncate)[0])
    weights = torch.tensor([target.weight for target in targets])
    combined = combine_targets(torch.stack(embeddings), weights)
    # targets that all but cancel leave a direction of rounding noise: not a target
    if not bool(torch.isfinite(combined).all()) or float(combined.norm()) <= 1e-4 * float(weights.abs().sum()):
        raise UserError(f"the targets of {quote(text)} cancel out; give the positive ones more weight")
    return torch.nn.functional.normalize(combined.to(clip.device), dim=-1)


def encode_image_files(clip: Clip, files: list[str]) -> torch.Tensor:
    """Unit-norm embeddings [N, D] of image files (a target given as an image)."""
    images = torch.stack([load_image(file, clip.image_size) for file in files]).to(clip.device)
    with torch.no_grad():
        return torch.nn.functional.normalize(clip.encode_images(images), dim=-1)


def target_label(text: str) -> str:
    """What a target is called in the store (its key), file names and logs: a text by itself, stripped; an
    image file by its name and its content, `image_label`."""
    return image_label(text) if _is_one_image(text) else text.strip()


def image_label(file: str) -> str:
    """An image target's key: `<stem>-<8 hex digits of the SHA-256 of its bytes><suffix>`, e.g.
    `red-3fa4b2c1.png`. Two files of the same name but other content are two targets, and no text prompt
    can be this key: a text prompt is the whole prompt, and one that ends in an image suffix and has no space
    (as this key, whose stem has none) is refused when no such file exists, or is that file, keyed by its
    own content."""
    stem = _UNSAFE_IN_LABEL.sub("_", Path(file).stem).strip("._-")[:60] or "image"
    return f"{stem}-{_content_digest(os.path.realpath(file), *_size_and_time(file))}{Path(file).suffix.lower()}"


_UNSAFE_IN_LABEL = re.compile(r"[^\w.-]+")  # whitespace, '|' and ':' above all (they would read as text)


def _size_and_time(file: str) -> tuple[int, int]:
    try:
        stat = os.stat(file)
    except OSError:
        raise UserError(f"image file not found: {cut(file)}") from None
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4096)
def _content_digest(file: str, size: int, mtime_ns: int) -> str:
    """The first 8 hex digits of the SHA-256 of a file's bytes (cached while its size and time stay)."""
    if size > MAX_IMAGE_FILE_BYTES:
        raise UserError(f"image {cut(file)} is larger than {MAX_IMAGE_FILE_BYTES // 2**20} MB")
    digest = hashlib.sha256()
    try:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise UserError(f"cannot read image {cut(file)}: {error.strerror or error}") from None
    return digest.hexdigest()[:8]


def _is_one_image(text: str) -> bool:
    """Whether a target is one image file alone (not weighted targets that include one)."""
    return names_image_file(text) and "|" not in text
