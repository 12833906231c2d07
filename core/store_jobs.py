"""The jobs of store.py, the path store's own tool: list, show, rm, gallery and import, each a typed job (what
`core.store_cli` makes of the command line) and the function that runs it (`run` picks it)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from core.gallery import GALLERY_DIR, OWN, Models, make_images, plan
from core.gallery_page import Card, write_gallery_page
from core.image_jobs import path_recipe
from core.models import load_clip
from core.paths import load_path
from core.recipes import RecipeChoice
from core.store import DEFAULT_STORE, check_in_store, find_path, list_paths, remove_path
from core.store_import import import_legacy
from core.store_view import (LEGACY, find_report, one_line, path_row, rows_json, show, sort_rows, summary_line,
                             table)

DEFAULT_OUT = "outputs"


@dataclass
class ListJob:
    """store.py list: a line per path, sorted by `sort` (`store_view.SORT_KEYS`), only `model`'s if given."""

    store: str = str(DEFAULT_STORE)
    sort: str = "prompt"
    reverse: bool = False
    model: str | None = None  # a model name, or "legacy"
    json: bool = False


@dataclass
class ShowJob:
    """store.py show: one path (a prompt in the store or a file) in full; its report is looked for in `out`."""

    item: str
    store: str = str(DEFAULT_STORE)
    out: str = DEFAULT_OUT


@dataclass
class RemoveJob:
    """store.py rm: remove the paths of `items` (prompts, or files in the store); only with `yes`."""

    items: list[str]
    store: str = str(DEFAULT_STORE)
    yes: bool = False


@dataclass
class GalleryJob:
    """store.py gallery: a page of the whole store in `out`/gallery/, replaying the paths without an image yet
    (`model` "own": each on the model it was baked with)."""

    store: str = str(DEFAULT_STORE)
    out: str = DEFAULT_OUT
    model: str = OWN
    device: str = "auto"
    seed: int = 0
    batch_size: int = 8
    sort: str = "prompt"
    reverse: bool = False
    quiet: bool = False
    recipe: RecipeChoice = field(default_factory=RecipeChoice)  # overrides of each path's own recipe


@dataclass
class ImportJob:
    """store.py import: the original tool's path files in `source` converted into `store`."""

    source: str
    store: str = str(DEFAULT_STORE)
    overwrite: bool = False


def _existing_store(store: str) -> Path:
    if not Path(store).is_dir():
        raise UserError(f"no store at {store} (--store names another folder)")
    return Path(store)


def list_job(job: ListJob) -> None:
    """Print the table (or the JSON list) of the store's paths and a summary line."""
    rows = [path_row(path) for path in list_paths(_existing_store(job.store))]
    if job.model:
        rows = [row for row in rows if (row.legacy if job.model == LEGACY else row.model == job.model)]
    rows = sort_rows(rows, job.sort, job.reverse)
    if job.json:
        print(rows_json(rows))
        return
    if rows:
        print(table(rows))
    print(summary_line(rows, job.store))


def show_job(job: ShowJob) -> None:
    """Print one path's prompt, file, model, stages, metrics, report and recipe."""
    print(show(job.store, job.item, job.out))


def _store_file(store: Path, item: str) -> Path:
    """The stored file `item` names: the path of that prompt, else a file that must be in the store itself."""
    found = find_path(store, item)
    if found is None and not os.path.lexists(item):
        raise UserError(f"no path for {one_line(item, 80)!r} in {store}; nothing removed")
    return check_in_store(store, found if found is not None else item)


def forget_images(store: Path, file: Path) -> int:
    """Remove the gallery's images of a path file (`<stem>-<16 hex>.png`); returns how many."""
    pattern = re.compile(re.escape(file.stem) + r"-[0-9a-f]{16}\.png")
    images = [image for image in (store / GALLERY_DIR).glob("*.png") if pattern.fullmatch(image.name)]
    for image in images:
        image.unlink(missing_ok=True)
    return len(images)


def _prompt_of(file: Path) -> str:
    """The prompt a file holds, quoted, for the list of what rm removes; an unreadable file (which `list` warns
    about) can be removed too."""
    try:
        return repr(one_line(load_path(file).prompt, 80))
    except UserError:
        return "unreadable"


def remove_job(job: RemoveJob) -> None:
    """Every item checked first (an unknown prompt or a file outside the store removes nothing); what would go
    is listed, and removed only with `yes`."""
    store = _existing_store(job.store)
    files: list[Path] = []
    for item in job.items:
        file = _store_file(store, item)
        if all(not file.samefile(seen) for seen in files):
            files.append(file)
    for file in files:
        print(f"{'removing' if job.yes else 'would remove'} {file} ({_prompt_of(file)})")
    if not job.yes:
        raise UserError(f"not removing {len(files)} path(s) without --yes")
    for file in files:
        remove_path(store, file)
        forget_images(store, file)
    print(f"removed {len(files)} path(s) from {store}")


def gallery_job(job: GalleryJob) -> None:
    """Replay what has no image yet, then write the page; print where it is."""
    store = _existing_store(job.store)
    paths = {str(path.file): path for path in list_paths(store)}
    if not paths:
        raise UserError(f"no paths in {store} to show (bake some with bake.py or batch_bake.py)")
    rows = sort_rows([path_row(path) for path in paths.values()], job.sort, job.reverse)
    clip = None if job.model == OWN else load_clip(job.model, job.device)
    shots = plan([paths[row.file] for row in rows], store, job.model, clip, job.seed,
                 lambda path: job.recipe.resolve(base=path_recipe(path, job.recipe)))
    cached = sum(1 for shot in shots if shot.image is not None and shot.image.is_file())
    made = make_images(shots, Models(job.device, clip), job.seed, job.batch_size, job.quiet)
    cards = [Card(row, shot.image if shot.image is not None and shot.image.is_file() else None,
                  made_with=f"{shot.model}, seed {job.seed}, {shot.settings.size} px" if shot.settings else "",
                  note=shot.note, report=find_report(job.out, row.prompt)) for row, shot in zip(rows, shots)]
    recipe = "the recipe it was baked with (legacy paths: the default recipe)" if job.recipe == RecipeChoice() \
        else "the recipe and values given"
    how = (f"Each image is its path replayed from seed {job.seed} with {recipe}, as microwave.py PATH "
           f"--seed {job.seed} makes it; "
           + ("each path on the model it was baked with." if job.model == OWN else f"model {clip.name}."))
    page = write_gallery_page(Path(job.out) / "gallery", store, cards, how)
    missing = sum(1 for card in cards if card.image is None)
    print(f"gallery: {page} ({len(cards)} paths: {made} images replayed now, {cached} from the cache, "
          f"{missing} without an image)")


def import_job(job: ImportJob) -> None:
    """Convert the legacy files of a folder into the store; a summary line at the end."""
    summary = import_legacy(job.source, job.store, job.overwrite)
    print(summary.line(job.store))


JOBS = {ListJob: list_job, ShowJob: show_job, RemoveJob: remove_job, GalleryJob: gallery_job, ImportJob: import_job}


def run(job) -> None:
    """Run a store.py job."""
    JOBS[type(job)](job)
