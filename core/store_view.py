"""The store as people read it: one row per path (`PathRow`: prompt, model, stages, size, the baked-vs-normal
change, date), sorted and printed as a table or as JSON (`store.py list`); one path in full (`store.py show`);
and where a path's bake report is (`find_report`).

The change is the baked path's held-out loss against a normal run of the same steps, in percent, from the
path's metrics: negative means baking paid off (`core.report.verdict_of`, the wording the bake prints).
Legacy paths of the original tool have no recipe or metrics: their size and change are blank.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from core.errors import UserError
from core.html_pages import escape
from core.paths import BakedPath, load_path
from core.report import change_text, verdict_of
from core.slugs import slugify
from core.store import find_path

SORT_KEYS = ("prompt", "change", "date", "model")
LEGACY = "legacy"
_PROMPT_WIDTH = 48  # the table cuts longer prompts (with '…'); --json has them whole


@dataclass
class PathRow:
    """One stored path as `store.py list` shows it (and as each object of `--json`)."""

    prompt: str
    file: str
    model: str | None
    embed_dim: int
    stages: int
    size: int | None  # from the recipe; None for legacy paths
    baked_loss: float | None
    normal_loss: float | None
    change: float | None  # percent; negative: baking paid off
    verdict: str | None
    created: str
    legacy: bool


def _number(value) -> float | None:
    """A finite number from a path's metrics or recipe, None for anything else (absent, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def path_row(path: BakedPath) -> PathRow:
    """A path's row: its recipe's size, its metrics' losses and the change between them."""
    baked, normal = _number(path.metrics.get("baked_loss")), _number(path.metrics.get("normal_loss"))
    verdict, change = verdict_of(baked, normal) if baked is not None and normal else (None, None)
    size = _number(path.recipe.get("size"))
    return PathRow(prompt=path.prompt, file=str(path.file) if path.file else "", model=path.model_name,
                   embed_dim=path.embed_dim, stages=path.stages, size=None if size is None else int(size),
                   baked_loss=baked, normal_loss=normal, change=change, verdict=verdict,
                   created=path.created, legacy=path.legacy)


def _date(created: str) -> datetime | None:
    """A path's creation time in UTC (a time without a zone, from a hand-made file, taken as UTC), or None."""
    try:
        date = datetime.fromisoformat(created)
    except ValueError:
        return None
    return date.astimezone(timezone.utc) if date.tzinfo else date.replace(tzinfo=timezone.utc)


def _sort_value(row: PathRow, key: str):
    """What a row is sorted by; None (a blank cell) always goes last."""
    if key == "change":
        return row.change
    if key == "date":
        date = _date(row.created)
        return None if date is None else date.timestamp()
    if key == "model":
        return LEGACY if row.legacy else (row.model or "")
    return row.prompt


def sort_rows(rows: list[PathRow], key: str = "prompt", reverse: bool = False) -> list[PathRow]:
    """Rows by `key` (one of SORT_KEYS; ties by prompt), `reverse` for descending; blanks last either way."""
    if key not in SORT_KEYS:
        raise UserError(f"cannot sort by {key!r}; choose from {', '.join(SORT_KEYS)}")
    by_prompt = sorted(rows, key=lambda row: (row.prompt, row.file))
    known = [row for row in by_prompt if _sort_value(row, key) is not None]
    blank = [row for row in by_prompt if _sort_value(row, key) is None]
    return sorted(known, key=lambda row: _sort_value(row, key), reverse=reverse) + blank


def one_line(text: str, width: int | None = None) -> str:
    """`text` safe for one terminal line: control characters (newlines, escapes) shown as `\\x..`, cut to
    `width` characters with '…'."""
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return safe if width is None or len(safe) <= width else safe[: width - 1] + "…"


def date_text(created: str) -> str:
    """`2025-01-31 12:00` (UTC), or the text itself, cut short, if it is not a time."""
    date = _date(created)
    return date.strftime("%Y-%m-%d %H:%M") if date else one_line(created, 20)


def table(rows: list[PathRow]) -> str:
    """The rows as an aligned text table, one line per path."""
    header = ("prompt", "model", "stages", "size", "change", "verdict", "created (UTC)")
    lines = [header] + [(one_line(row.prompt, _PROMPT_WIDTH), LEGACY if row.legacy else one_line(row.model or "?", 30),
                         str(row.stages), "" if row.size is None else str(row.size),
                         "" if row.change is None else change_text(row.change), row.verdict or "",
                         date_text(row.created)) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    right = {2, 3, 4}  # numbers
    return "\n".join("  ".join(cell.rjust(width) if column in right else cell.ljust(width)
                               for column, (cell, width) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)


def rows_json(rows: list[PathRow]) -> str:
    """The rows as a JSON list of objects (every field of `PathRow`)."""
    return json.dumps([asdict(row) for row in rows], indent=2, ensure_ascii=False)


def summary_line(rows: list[PathRow], store: str | os.PathLike) -> str:
    """`N paths in STORE: C compared, P paid off, D did not; L legacy`."""
    compared = [row for row in rows if row.change is not None]
    paid = sum(1 for row in compared if row.baked_loss < row.normal_loss)
    parts = [f"{len(compared)} compared, {paid} paid off, {len(compared) - paid} did not"]
    legacy = sum(1 for row in rows if row.legacy)
    if legacy:
        parts.append(f"{legacy} legacy (store.py import converts them)")
    noun = "path" if len(rows) == 1 else "paths"
    return f"{len(rows)} {noun} in {store}: " + "; ".join(parts)


# --------------------------------------------------------------------------- one path


def find_report(out_dir: str | os.PathLike, prompt: str) -> Path | None:
    """The newest bake report of `prompt` under `out_dir`: `OUT/reports/<slug>/index.html`, or `<slug>-N/` for a
    later bake (`core.report.write_bake_report`), the one whose title names this very prompt; None if none."""
    reports = Path(out_dir) / "reports"
    slug = slugify(prompt)
    if not reports.is_dir():
        return None
    folders = [reports / slug] + [folder for folder in reports.glob(f"{slug}-*")
                                  if folder.name[len(slug) + 1:].isdigit()]
    title = f"<title>{escape(f'Bake report: {prompt}')}</title>"
    found = []
    for folder in folders:
        page = folder / "index.html"
        try:
            if page.is_file() and title in page.read_text(encoding="utf-8", errors="replace")[:4000]:
                found.append(page)
        except OSError:
            continue
    # the newest; a tie (coarse clocks) goes to the later folder, <slug>-2 after <slug>-1 after <slug>
    number = lambda page: int(page.parent.name[len(slug) + 1:] or 0)  # noqa: E731
    return max(found, key=lambda page: (page.stat().st_mtime_ns, number(page)), default=None)


def locate(store: str | os.PathLike, item: str) -> Path:
    """The file `item` names: the stored path of the prompt `item`, else a file (anywhere) as it is."""
    found = find_path(store, item)
    if found is None and os.path.isfile(item):
        return Path(item)
    if found is None:
        raise UserError(f"no path for {one_line(item, 80)!r} in {store} (store.py list shows what is there)")
    return found


def _metrics_lines(metrics: dict) -> list[str]:
    """The losses, the change, the seconds, the meta-loss curve (its length and ends) and the bake settings."""
    baked, normal = _number(metrics.get("baked_loss")), _number(metrics.get("normal_loss"))
    lines = []
    if baked is not None and normal:
        verdict, change = verdict_of(baked, normal)
        lines.append(f"change:   {change_text(change)}, {verdict} (held-out loss: baked {baked:.4f} vs normal "
                     f"{normal:.4f})")
    if _number(metrics.get("seconds")) is not None:
        lines.append(f"seconds:  {metrics['seconds']:.1f}")
    curve = metrics.get("curve")
    if isinstance(curve, list) and curve:
        ends = [point.get("meta_loss") if isinstance(point, dict) else None for point in (curve[0], curve[-1])]
        ends = [value if _number(value) is not None else None for value in ends]
        shown = " -> ".join("?" if value is None else f"{value:.4f}" for value in ends)
        lines.append(f"curve:    {len(curve)} meta-step{'s' if len(curve) > 1 else ''}, meta-loss {shown}")
    other = {key: value for key, value in metrics.items()
             if key not in ("baked_loss", "normal_loss", "seconds", "curve")}
    if other:
        lines += ["metrics:"] + _indented_yaml(other, sort_keys=True, flow=False)
    return lines


def _indented_yaml(value: dict, sort_keys: bool = False, flow: bool | None = None) -> list[str]:
    """A dict as indented YAML lines (what YAML cannot write, e.g. a tensor in a hand-made file, as its repr)."""
    def plain(item):  # YAML writes lists, not tuples (a resolved recipe has some)
        if isinstance(item, dict):
            return {key: plain(inner) for key, inner in item.items()}
        return [plain(inner) for inner in item] if isinstance(item, (list, tuple)) else item

    try:
        text = yaml.safe_dump(plain(value), sort_keys=sort_keys, default_flow_style=flow, allow_unicode=True)
    except yaml.YAMLError:
        text = "\n".join(f"{key}: {item!r}" for key, item in value.items())
    return [f"  {one_line(line)}" for line in text.splitlines()]


def describe(path: BakedPath, out_dir: str | os.PathLike) -> str:
    """What `store.py show` prints about a path: who it is, how it went, its recipe, where its report is."""
    row = path_row(path)
    size = f", {row.size} px" if row.size else ""
    steps = _number(path.recipe.get("steps_per_stage"))
    per_stage = f" x {int(steps)} steps" if steps else ""
    lines = [f"prompt:   {one_line(path.prompt)}",
             f"file:     {path.file} ({path.file.stat().st_size / 1024:.1f} kB)" if path.file else "file:     -",
             f"model:    {one_line(path.model_name or '?')} (embed dim {path.embed_dim})"
             + ("; a legacy file of the original tool (store.py import converts it)" if path.legacy else ""),
             f"stages:   {path.stages}{per_stage}{size}",
             f"created:  {date_text(path.created)} ({one_line(path.created)})"]
    lines += _metrics_lines(path.metrics) or ["metrics:  none recorded"]
    report = find_report(out_dir, path.prompt)
    lines.append(f"report:   {report}" if report else
                 f"report:   no report found under {Path(out_dir) / 'reports'} (--out names another outputs folder)")
    if path.recipe:
        lines += ["recipe:"] + _indented_yaml(path.recipe)
    else:
        lines.append("recipe:   none recorded (replayed with the default recipe)")
    return "\n".join(lines)


def show(store: str | os.PathLike, item: str, out_dir: str | os.PathLike) -> str:
    """`describe` of the path `item` names (a file, or a prompt in the store)."""
    return describe(load_path(locate(store, item)), out_dir)
