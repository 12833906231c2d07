"""The gallery page: the whole store on one HTML page (`store.py gallery`), a card per path with its final
image, the baked-vs-normal change and a link to its bake report.

The page is `<directory>/index.html` (`index-1.html`, ... if taken: nothing is overwritten) and copies the
images it shows into `<directory>/images/` (their names are content hashes, so a copy is never replaced by
another image), so the folder works moved or zipped; only the report links point outside it, into
`OUT/reports/`. All text is escaped, all links are relative (`core.html_pages`).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.files import unique_path, write_atomically
from core.html_pages import escape, href, html_page, image_size, write_page
from core.report import change_text
from core.store_view import LEGACY, PathRow, date_text, summary_line

DISPLAY_PX = 192  # every image is shown this wide (nearest neighbour, so pixels stay sharp blocks)


@dataclass
class Card:
    """One path on the page: its row, its image (None: `note` says why not), how the image was made, its
    report (None if none was found)."""

    row: PathRow
    image: Path | None
    made_with: str = ""
    note: str = ""
    report: Path | None = None


def _copy_image(image: Path, folder: Path) -> Path:
    """`image` copied into `folder` under its own name (already there: the same content, kept)."""
    copy = folder / image.name
    if not copy.is_file():
        with image.open("rb") as source:
            try:
                write_atomically(copy, lambda handle: shutil.copyfileobj(source, handle), replace=False)
            except FileExistsError:  # copied meanwhile by another gallery run: the same bytes
                pass
    return copy


def _picture(card: Card, page_dir: Path) -> str:
    """The card's image, enlarged, or a box with the note saying why there is none."""
    size = image_size(card.image) if card.image is not None else None
    if size is None:
        note = card.note or "no image"
        return (f'<div class="noimage" style="width: {DISPLAY_PX}px; height: {DISPLAY_PX}px">'
                f"{escape(note)}</div>")
    width, height = size
    shown = (DISPLAY_PX, max(1, round(DISPLAY_PX * height / width)))
    copy = _copy_image(card.image, page_dir / "images")
    return (f'<img class="pixels" src="{href(copy.resolve(), page_dir)}" width="{shown[0]}" height="{shown[1]}" '
            f'alt="{escape(card.row.prompt)}">')


def _caption(card: Card, page_dir: Path) -> str:
    """Prompt, change and verdict, model, stages and size, date, report link."""
    row = card.row
    lines = [f"<strong>{escape(row.prompt)}</strong>"]
    if row.change is not None:
        css = "good" if row.baked_loss < row.normal_loss else "bad"
        lines.append(f'<span class="{css}">{escape(change_text(row.change))} · {escape(row.verdict)}</span>')
    else:
        lines.append('<span class="muted">no comparison recorded</span>')
    model = f"{LEGACY} ({row.model})" if row.legacy else (row.model or "?")
    size = f" · {row.size} px" if row.size else ""
    lines.append(f"{escape(model)} · {row.stages} stages{escape(size)}")
    lines.append(f'<span class="muted">{escape(date_text(row.created))}</span>')
    if card.image is not None and card.made_with:
        lines.append(f'<span class="muted">image: {escape(card.made_with)}</span>')
    if card.report is not None:
        lines.append(f'<a href="{href(Path(card.report).resolve(), page_dir)}">report</a>')
    else:
        lines.append('<span class="muted">no report</span>')
    return "<br>".join(lines)


def write_gallery_page(directory: str | os.PathLike, store: str | os.PathLike, cards: list[Card],
                       how: str) -> Path:
    """Write the gallery of `store`, one card per entry of `cards` in that order; `how` says how the images
    were made (shown under the heading). Returns the page."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    title = f"Gallery: {store}"
    with_images = sum(1 for card in cards if card.image is not None and card.image.is_file())
    body = [f"<h1>{escape(title)}</h1>",
            f"<p>{escape(summary_line([card.row for card in cards], store))}; {with_images} with an image.</p>",
            f'<p class="muted">{escape(how)} The change is the baked path\'s held-out loss against a normal '
            "run of the same steps: negative means baking paid off.</p>",
            "<div>"]
    body += [f'<figure class="card">{_picture(card, directory)}<figcaption>{_caption(card, directory)}'
             "</figcaption></figure>" for card in cards]
    body.append("</div>")
    page = unique_path(directory, "index", ".html")
    try:
        return write_page(page, html_page(title, body))
    except BaseException:
        page.unlink(missing_ok=True)  # free the reserved name again
        raise
