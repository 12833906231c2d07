"""Image files: PNG (with metadata) and animated GIF output that never overwrites, and image input.

Images are float tensors ``[3, H, W]`` in ``[0, 1]``. A file name is first reserved with an
exclusive create (so two processes writing "the same" image get ``x.png`` and ``x-1.png``),
then the image is written to a temporary file and renamed onto the reserved name, so a reader
never sees a half-written image (``core.files.write_new``).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from torch import Tensor

from core.errors import UserError, cut
from core.files import write_new
from core.limits import MAX_IMAGE_FILE_BYTES, MAX_INPUT_PIXELS, check_image_header


def quantize(image: Tensor, levels: int) -> Tensor:
    """Round values in ``[0, 1]`` to ``levels`` evenly spaced levels (16: 0, 1/15, ..., 1).

    Values outside ``[0, 1]`` are clamped first. Works on any shape; the gradient of the
    rounding is zero, so use it on outputs, not inside an optimisation.
    """
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    steps = levels - 1
    return torch.round(image.clamp(0.0, 1.0) * steps) / steps


def to_pil(image: Tensor, upscale: int = 1) -> Image.Image:
    """An RGB PIL image from a ``[3, H, W]`` tensor in ``[0, 1]``, enlarged ``upscale`` times.

    Enlarging uses nearest neighbour so every pixel of the optimised image stays a sharp block.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got {list(image.shape)}")
    if upscale < 1:
        raise ValueError(f"upscale must be at least 1, got {upscale}")
    pixels = (image.detach().to("cpu", torch.float32).clamp(0.0, 1.0) * 255).round()
    array = pixels.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    pil = Image.fromarray(array)  # uint8 [H, W, 3] is RGB
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.Resampling.NEAREST)
    return pil


def _png_info(metadata: dict) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        # PNG keywords are 1-79 Latin-1 characters; a bad one is a programming mistake.
        if not isinstance(key, str) or not 1 <= len(key) <= 79:
            raise ValueError(f"bad PNG metadata key: {key!r}")
        key.encode("latin-1")
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        # add_text stores non-Latin-1 text (a unicode prompt) as an iTXt chunk by itself.
        info.add_text(key, text)
    return info


def save_png(
    image: Tensor,
    directory: str | os.PathLike,
    stem: str,
    metadata: dict | None = None,
    upscale: int = 1,
) -> Path:
    """Save ``image`` ``[3, H, W]`` as a new PNG (never overwriting) and return its path.

    Each ``metadata`` item becomes a PNG text chunk: strings as they are, anything else (seed,
    the recipe dict, ...) as JSON. ``read_png_metadata`` gives them back as strings.
    """
    pil = to_pil(image, upscale)
    info = _png_info(metadata or {})
    return write_new(
        directory, stem, ".png", lambda handle: pil.save(handle, format="PNG", pnginfo=info)
    )


def save_gif(
    frames: list[Tensor],
    directory: str | os.PathLike,
    stem: str,
    upscale: int = 1,
    duration_ms: int = 100,
) -> Path:
    """Save ``frames`` (each ``[3, H, W]``) as a new looping animated GIF and return its path.

    Note that Pillow merges a frame identical to the one before it into a longer frame.
    """
    if not frames:
        raise ValueError("no frames to save")
    pils = [to_pil(frame, upscale) for frame in frames]

    def write(handle) -> None:
        pils[0].save(
            handle,
            format="GIF",
            save_all=True,
            append_images=pils[1:],
            duration=duration_ms,
            loop=0,
        )

    return write_new(directory, stem, ".gif", write)


def read_png_metadata(file: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG as ``{key: text}``; JSON-decode values that were not strings."""
    file = Path(file)
    try:
        with Image.open(file) as image:
            if image.format != "PNG":
                raise UserError(f"{file} is not a PNG image ({image.format})")
            image.load()  # text chunks after the image data are only read by load()
            return dict(image.text)
    except FileNotFoundError:
        raise UserError(f"no image at {file}") from None
    except UnidentifiedImageError:
        raise UserError(f"{file} is not an image") from None
    except OSError as error:
        raise UserError(f"cannot read {file}: {error}") from None


def check_image_file(file: str | os.PathLike) -> None:
    """UserError unless `file` is an image file within the limits (`core.limits`: its bytes, and its pixels
    as its header gives them), checked without decoding it."""
    with _open_image(file):
        pass


@contextlib.contextmanager
def _open_image(file: str | os.PathLike) -> Iterator[Image.Image]:
    """The opened image (its header read, its pixels not yet decoded) if within limits; else a UserError."""
    if not os.path.isfile(file):  # also refuses a FIFO or device, which would block or never end
        raise UserError(f"image file not found: {cut(file)}")
    if os.path.getsize(file) > MAX_IMAGE_FILE_BYTES:
        raise UserError(f"image {cut(file)} is larger than {MAX_IMAGE_FILE_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: the limit below says it in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(file)
    except Image.DecompressionBombError:
        raise UserError(f"image {cut(file)} has too many pixels; at most {MAX_INPUT_PIXELS // 2**20} megapixels "
                        f"are read") from None
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read image {cut(file)}: {error}") from None
    with opened:
        check_image_header(str(file), opened.width, opened.height)
        yield opened


def load_image(file: str | os.PathLike, size: int | None = None) -> Tensor:
    """An image file as a float tensor [3, H, W] in [0, 1], optionally resized to `size`x`size`.

    A missing, unreadable or too large file (`check_image_file`) is a `UserError` naming it.
    """
    with _open_image(file) as opened:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                picture = opened.convert("RGB")
        except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors for a truncated or corrupt file
            raise UserError(f"cannot read image {cut(file)}: {error}") from None
    if size is not None:
        picture = picture.resize((size, size), Image.Resampling.BICUBIC)
    array = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8)
    return array.view(picture.height, picture.width, 3).permute(2, 0, 1).float() / 255


__all__ = ["quantize", "to_pil", "save_png", "save_gif", "read_png_metadata",
           "check_image_file", "load_image"]
