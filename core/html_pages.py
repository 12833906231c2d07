"""What every HTML page of the project shares: one inline style, escaping, relative links, number cells,
the page frame, and how much small images are enlarged. Pages are plain HTML that works offline, moved or
zipped: no scripts, no external files, every link relative, all user text escaped."""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

from PIL import Image

from core.files import write_text_atomically

# Stage images are often tiny (16-64 px); enlarge them (nearest neighbour, so each optimised pixel
# stays a sharp block) until the longer side is at least this many pixels.
MIN_DISPLAY_PX = 192

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img.pixels { image-rendering: pixelated; image-rendering: crisp-edges; display: block; }
figure { display: inline-block; margin: 0 0.8em 0.8em 0; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
.good { color: #17612b; font-weight: bold; } .bad { color: #9b1c1c; font-weight: bold; }
.muted { color: #777; }
ul.scores { list-style: none; padding: 0; margin: 0.3em 0 0 0; font-size: 0.85em; }
figure.card { width: 200px; vertical-align: top; }
div.noimage { border: 1px dashed #bbb; color: #777; font-size: 0.85em; padding: 0.5em; box-sizing: border-box;
  overflow: hidden; }
"""


def escape(text) -> str:
    """HTML-escape anything (prompts are user input), quotes included so it is safe in attributes."""
    return html.escape(str(text), quote=True)


def href(target: str | os.PathLike, page_dir: Path) -> str:
    """A relative, URL-quoted, HTML-escaped link from a page in ``page_dir`` to ``target``.

    Relative targets are taken as relative to the page already. ``quote`` keeps '/' but encodes
    spaces, '#', '?' and '%', which would otherwise be read as URL syntax.
    """
    target = Path(target)
    if target.is_absolute():
        target = Path(os.path.relpath(target.resolve(), page_dir.resolve()))
    return escape(quote(target.as_posix()))


def number_text(value, digits: int = 4) -> str:
    """A table cell text for a number: floats to ``digits`` significant digits, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.{digits}g}"
    return str(value)


def is_number(value) -> bool:
    """Whether a cell holds a number (right-aligned), booleans excepted."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def html_page(title: str, body: Iterable[str]) -> str:
    """A whole page: the frame, the title, the style, then the `body` lines."""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ])


def write_page(file: Path, text: str) -> Path:
    """Write a page atomically (a reader never sees half of it)."""
    return write_text_atomically(file, text)


def upscale_for(height: int, width: int) -> int:
    """How many times a picture of this size is enlarged (nearest neighbour) to be seen: to ``MIN_DISPLAY_PX``."""
    return max(1, math.ceil(MIN_DISPLAY_PX / max(height, width, 1)))


def image_size(file: Path) -> tuple[int, int] | None:
    """(width, height) of an image file, or None if it is missing or not an image."""
    try:
        with Image.open(file) as opened:
            return opened.size
    except OSError:  # missing, unreadable, or not an image (UnidentifiedImageError)
        return None
