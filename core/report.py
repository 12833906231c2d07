"""HTML reports that can be zipped and opened anywhere, offline (shared page parts: `core.html_pages`,
loss plots: `core.plots`).

Three pages:

* ``write_bake_report``: one baked prompt, in a folder of its own (``<directory>/<slug>/``) with
  its stage images, meta-loss curve, optional GIF, the held-out comparison with a normal run and
  the recipe.
* ``write_batch_report``: one page for a batch bake, a row per prompt, linking to the bake
  reports.
* ``write_comparison_page``: the evaluation page, images of every method side by side (one row
  per prompt and seed, one column per method) under a summary table.

Every page is plain HTML with a small inline ``<style>``: no scripts, no external CSS, fonts or
images, and every link is relative, so a report folder still works when moved or zipped. All
text that can come from a user (prompts above all) is HTML-escaped. Nothing is overwritten: a
second report for the same prompt gets ``<slug>-1/``, a second batch page ``batch-1.html``, a
second comparison page in the same folder ``index-1.html``.
"""

from __future__ import annotations

import json
import os
import pprint
import shutil
from pathlib import Path

from PIL import Image
from torch import Tensor

from core.files import unique_dir, unique_path, write_atomically
from core.html_pages import escape, href, html_page, image_size, is_number, number_text, upscale_for, write_page
from core.images import save_png
from core.plots import curve_mean, plot_curves
from core.slugs import slugify

def verdict_of(baked_loss: float, normal_loss: float) -> tuple[str, float]:
    """Whether baking paid off, and the baked loss's change against the normal run's in percent."""
    verdict = "baking paid off" if baked_loss < normal_loss else "baking did not pay off"
    change = (baked_loss - normal_loss) / normal_loss * 100 if normal_loss else 0.0
    return verdict, change


def change_text(change: float) -> str:
    """A change in percent as the pages and the command line print it: ``-12.3%``; a change that rounds to
    zero is ``0.0%`` (never ``-0.0%``)."""
    text = f"{change:+.1f}%"
    return "0.0%" if text in ("+0.0%", "-0.0%") else text


# The evaluation summary's keys as the command line's table names them; a key ending in `_rate` is a share
# shown in percent ("50 %"), like the command line prints it.
SUMMARY_HEADERS = {"judge_mean": "mean judge score", "win_rate": "wins over normal (prompts)",
                   "pixel_pass_rate": "pixel checks passed"}


def _summary_header(key: str) -> str:
    return SUMMARY_HEADERS.get(key, key.replace("_", " "))


def _summary_cell(key: str, value) -> str:
    if key.endswith("_rate") and is_number(value):
        return f"{value * 100:.0f} %"
    return number_text(value)


# --------------------------------------------------------------------------- bake report


def write_bake_report(
    directory: str | os.PathLike,
    prompt: str,
    stage_images: list[Tensor],
    curve: list[dict],
    baked_loss: float,
    normal_loss: float,
    gif: str | os.PathLike | None,
    final_image: Tensor | None,
    metadata: dict,
) -> Path:
    """Write a self-contained report folder for one baked prompt; return its ``index.html``.

    The folder is ``<directory>/<slugify(prompt)>/`` (``-1``, ``-2``, ... if taken; an existing
    report is never touched) and holds ``index.html``, ``stage-<i>.png`` for each stage image
    (``[3, H, W]`` in ``[0, 1]``, enlarged by nearest neighbour to at least ``MIN_DISPLAY_PX``),
    ``final.png`` if ``final_image`` is given, a copy of ``gif`` if given (so the folder does not
    depend on where the GIF was), ``curve.png`` with the mean meta-loss per step (each
    ``curve[i]["meta_loss"]`` is a float or a list of floats, one per prompt) and
    ``grad_norm.png`` if the curve records ``grad_norm``. If anything fails the half-made folder
    is removed again.
    """
    gif = Path(gif) if gif is not None else None
    if gif is not None and not gif.is_file():
        raise FileNotFoundError(f"no GIF at {gif}")
    baked_loss, normal_loss = float(baked_loss), float(normal_loss)
    folder = unique_dir(directory, slugify(prompt))
    try:
        return _fill_bake_report(folder, prompt, stage_images, curve, baked_loss, normal_loss,
                                 gif, final_image, metadata)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _image_figure(image: Tensor, folder: Path, stem: str, caption: str, prompt: str) -> str:
    """Save ``image`` enlarged into ``folder`` and return a ``<figure>`` showing it."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    upscale = upscale_for(height, width)
    file = save_png(image, folder, stem, metadata={"prompt": prompt}, upscale=upscale)
    return (f'<figure><img class="pixels" src="{href(file.name, folder)}" '
            f'width="{width * upscale}" height="{height * upscale}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)} · {width}×{height} px, shown ×{upscale}</figcaption></figure>")


def _fill_bake_report(folder, prompt, stage_images, curve, baked_loss, normal_loss, gif,
                      final_image, metadata) -> Path:
    """The bake report's sections in order (comparison, stages, result, curves, metadata), written as its page."""
    body = [f"<h1>Bake report: {escape(prompt)}</h1>"]

    verdict, change = verdict_of(baked_loss, normal_loss)
    css = "good" if baked_loss < normal_loss else "bad"
    body += [
        "<h2>Held-out comparison</h2>",
        '<p class="muted">Loss of rendering with the baked guides versus a normal run (every stage '
        "guided by the prompt itself) with the same number of steps; lower is better.</p>",
        "<table>",
        "<tr><th>baked loss</th><th>normal loss</th><th>change</th><th>verdict</th></tr>",
        f'<tr><td class="num">{baked_loss:.4f}</td><td class="num">{normal_loss:.4f}</td>'
        f'<td class="num">{change_text(change)}</td><td class="{css}">{escape(verdict)}</td></tr>',
        "</table>",
    ]

    if stage_images:
        body.append("<h2>Stages</h2><div>")
        count = len(stage_images)
        for index, image in enumerate(stage_images):
            body.append(_image_figure(image, folder, f"stage-{index}",
                                      f"stage {index + 1} of {count}", prompt))
        body.append("</div>")

    body += _result_section(folder, prompt, final_image, gif)
    body += _curve_section(folder, curve)
    body.append("<h2>Metadata</h2>")
    try:
        text = json.dumps(metadata, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    except (TypeError, ValueError):  # keys JSON cannot sort or hold (mixed types, tuples)
        text = pprint.pformat(metadata, width=100)
    body.append(f"<pre>{escape(text)}</pre>")

    return write_page(folder / "index.html", html_page(f"Bake report: {prompt}", body))


def _result_section(folder: Path, prompt: str, final_image: Tensor | None, gif: Path | None) -> list[str]:
    """The final image and a copy of the GIF, saved into the report folder, as a section."""
    if final_image is None and gif is None:
        return []
    body = ["<h2>Result</h2><div>"]
    if final_image is not None:
        body.append(_image_figure(final_image, folder, "final", "final image", prompt))
    if gif is not None:
        copy = folder / ("animation" + gif.suffix.lower())
        with gif.open("rb") as source:
            write_atomically(copy, lambda handle: shutil.copyfileobj(source, handle))
        with Image.open(copy) as opened:
            width, height = opened.size
        upscale = upscale_for(height, width)
        src = href(copy.name, folder)
        body.append(
            f'<figure><a href="{src}"><img class="pixels" src="{src}" width="{width * upscale}" '
            f'height="{height * upscale}" alt="animation of the render"></a>'
            f"<figcaption>the render, step by step · {width}×{height} px</figcaption></figure>")
    body.append("</div>")
    return body


def _curve_section(folder: Path, curve: list[dict]) -> list[str]:
    """The meta-loss (and gradient norm) plots, saved into the report folder, as a section."""
    body = ["<h2>Meta-loss</h2>"]
    steps = [point.get("meta_step", index) for index, point in enumerate(curve)]
    meta_loss = [curve_mean(point.get("meta_loss")) for point in curve]
    several = any(isinstance(point.get("meta_loss"), (list, tuple)) for point in curve)
    plot_curves({"meta-loss (mean over prompts)" if several else "meta-loss": meta_loss},
                folder / "curve.png", "Meta-loss during baking", "meta step", "meta-loss",
                steps=steps)
    body.append('<figure><img src="curve.png" alt="meta-loss curve">'
                f"<figcaption>{len(curve)} meta steps</figcaption></figure>")
    if any("grad_norm" in point for point in curve):
        grad_norm = [curve_mean(point.get("grad_norm")) for point in curve]
        plot_curves({"gradient norm (mean over prompts)" if several else "gradient norm": grad_norm},
                    folder / "grad_norm.png", "Meta-gradient norm", "meta step", "norm", steps=steps)
        body.append('<figure><img src="grad_norm.png" alt="gradient norm curve">'
                    "<figcaption>meta-gradient norm before clipping</figcaption></figure>")
    return body


# --------------------------------------------------------------------------- batch report


def write_batch_report(directory: str | os.PathLike, entries: list[dict]) -> Path:
    """Write one page for a batch bake, ``<directory>/batch.html`` (or ``batch-1.html``, ...).

    Each entry is a dict with ``prompt`` and ``status`` ("baked", "skipped", "failed", ...) and
    optionally ``reason``, ``baked_loss``, ``normal_loss``, ``change`` (percent; computed from
    the losses if absent), ``seconds`` and ``report``: a bake report's ``index.html`` or folder,
    as ``write_bake_report`` returned it (absolute or relative to the current directory) or
    relative to ``directory``; the page links to it relatively. Totals follow the table.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = ["<tr><th>#</th><th>prompt</th><th>status</th><th>baked loss</th><th>normal loss</th>"
            "<th>change</th><th>seconds</th><th>report</th></tr>"]
    statuses: dict[str, int] = {}
    changes, paid_off, total_seconds = [], 0, 0.0
    for number, entry in enumerate(entries, start=1):
        status = str(entry.get("status", "unknown"))
        statuses[status] = statuses.get(status, 0) + 1
        baked, normal = entry.get("baked_loss"), entry.get("normal_loss")
        change = entry.get("change")
        if change is None and baked is not None and normal is not None:
            change = verdict_of(float(baked), float(normal))[1]
        if change is not None:
            changes.append(float(change))
        if baked is not None and normal is not None and float(baked) < float(normal):
            paid_off += 1
        if entry.get("seconds") is not None:
            total_seconds += float(entry["seconds"])
        rows.append(_batch_row(directory, number, entry, status, change))

    counts = ", ".join(f"{count} {escape(status)}" for status, count in statuses.items()) or "none"
    mean_change = change_text(sum(changes) / len(changes)) if changes else "—"
    body = [
        "<h1>Batch bake</h1>",
        "<table>", *rows, "</table>",
        '<p class="muted">change: held-out loss of the baked guides relative to a normal run; '
        "negative means baking paid off.</p>",
        "<h2>Totals</h2>",
        "<table>",
        f'<tr><th>prompts</th><td class="num">{len(entries)}</td></tr>',
        f"<tr><th>by status</th><td>{counts}</td></tr>",
        f'<tr><th>baking paid off</th><td class="num">{paid_off} of {len(changes)} compared</td></tr>',
        f'<tr><th>mean change</th><td class="num">{mean_change}</td></tr>',
        f'<tr><th>total seconds</th><td class="num">{total_seconds:.1f}</td></tr>',
        "</table>",
    ]
    page = unique_path(directory, "batch", ".html")
    try:
        return write_page(page, html_page("Batch bake", body))
    except BaseException:
        page.unlink(missing_ok=True)  # free the reserved name again
        raise


def _batch_row(directory: Path, number: int, entry: dict, status: str, change: float | None) -> str:
    """One prompt's row of the batch page, its report linked relatively."""
    baked, normal, seconds = entry.get("baked_loss"), entry.get("normal_loss"), entry.get("seconds")
    css = {"baked": "good", "failed": "bad"}.get(status, "muted")
    status_cell = f'<span class="{css}">{escape(status)}</span>'
    if entry.get("reason"):
        status_cell += f"<br><small>{escape(entry['reason'])}</small>"
    link = "—"
    if entry.get("report"):
        report = Path(entry["report"])
        # A path as write_bake_report returned it, else one relative to the page.
        if not report.is_absolute() and not report.exists() and (directory / report).exists():
            report = directory / report
        if report.is_dir() or report.suffix != ".html":
            report = report / "index.html"
        link = f'<a href="{href(report.resolve(), directory)}">report</a>'
    return (f"<tr><td class=\"num\">{number}</td><td>{escape(entry.get('prompt', ''))}</td>"
            f"<td>{status_cell}</td>"
            f'<td class="num">{number_text(None if baked is None else float(baked))}</td>'
            f'<td class="num">{number_text(None if normal is None else float(normal))}</td>'
            f'<td class="num">{"—" if change is None else change_text(float(change))}</td>'
            f'<td class="num">{"—" if seconds is None else f"{float(seconds):.1f}"}</td>'
            f"<td>{link}</td></tr>")


# --------------------------------------------------------------------------- comparison page


def _columns(dicts: list[dict]) -> list[str]:
    """The union of the dicts' keys, in order of first appearance (a stable, generic header)."""
    columns: list[str] = []
    for item in dicts:
        for key in item:
            if key not in columns:
                columns.append(key)
    return columns


def write_comparison_page(
    directory: str | os.PathLike,
    title: str,
    methods: list[str],
    rows: list[dict],
    summary: list[dict],
) -> Path:
    """Write the evaluation page ``<directory>/index.html`` (``index-1.html``, ... if taken).

    ``summary`` is one dict per method, shown on top as a table whose columns are the union of
    the dicts' keys (nothing is assumed about score names). Below, one table row per
    ``rows[i]`` (its ``prompt`` and ``seed`` label the row) and one column per method, each
    cell the image ``rows[i]["images"][method]`` (a path relative to ``directory``, or absolute)
    and the scores ``rows[i]["scores"][method]`` (name -> number). Small images are shown
    enlarged like the bake report's; a method missing from a row, or an image file that is
    missing or unreadable, shows as text rather than as a broken image.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    body = [f"<h1>{escape(title)}</h1>"]

    if summary:
        columns = _columns(summary)
        body.append("<h2>Summary</h2><table>")
        body.append('<tr class="header">' + "".join(f"<th>{escape(_summary_header(c))}</th>" for c in columns) + "</tr>")
        for item in summary:
            cells = []
            for column in columns:
                value = item.get(column)
                css = ' class="num"' if is_number(value) else ""
                cells.append(f"<td{css}>{escape(_summary_cell(column, value))}</td>")
            body.append('<tr class="summary">' + "".join(cells) + "</tr>")
        body.append("</table>")

    body.append("<h2>Images</h2><table>")
    body.append('<tr class="header"><th>prompt</th>'
                + "".join(f"<th>{escape(method)}</th>" for method in methods) + "</tr>")
    for row in rows:
        label = f"{escape(row.get('prompt', ''))}"
        if row.get("seed") is not None:
            label += f'<br><small class="muted">seed {escape(row["seed"])}</small>'
        cells = [f"<th>{label}</th>"]
        images, scores = row.get("images", {}), row.get("scores", {})
        for method in methods:
            cell = _comparison_cell(directory, method, images.get(method), scores.get(method))
            cells.append(f"<td>{cell}</td>")
        body.append('<tr class="row">' + "".join(cells) + "</tr>")
    body.append("</table>")

    page = unique_path(directory, "index", ".html")
    try:
        return write_page(page, html_page(title, body))
    except BaseException:
        page.unlink(missing_ok=True)
        raise


def _comparison_cell(directory: Path, method: str, image, scores: dict | None) -> str:
    parts = []
    if image is None:
        parts.append('<span class="muted">no image</span>')
    else:
        file = Path(image) if Path(image).is_absolute() else directory / image
        size = image_size(file)
        if size is not None:
            width, height = size
            upscale = upscale_for(height, width)
            parts.append(f'<img class="pixels" src="{href(image, directory)}" alt="{escape(method)}" '
                         f'width="{width * upscale}" height="{height * upscale}">')
        else:
            parts.append(f'<span class="bad">missing: {escape(image)}</span>')
    if scores:
        items = "".join(f"<li>{escape(name)}: {escape(number_text(value))}</li>" for name, value in scores.items())
        parts.append(f'<ul class="scores">{items}</ul>')
    return "".join(parts)


__all__ = ["verdict_of", "change_text", "write_bake_report", "write_batch_report", "write_comparison_page"]
