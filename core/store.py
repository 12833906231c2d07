"""The path store: a directory (default ``baked/``) holding one file per baked prompt.

``save_path`` writes a path into the store (atomically, never over another prompt's file, and without
``overwrite`` never over a path saved meanwhile), ``find_path`` finds the file holding a prompt (ours
or the original tool's name), ``list_paths`` reads them all, ``remove_path`` removes one (and nothing
outside the store).

Names: a *path* is a ``BakedPath`` (what was baked, ``core.paths``), a *file* is where it is stored;
``find_path`` returns the file (a ``pathlib.Path``) and ``load_path`` reads the ``BakedPath`` from it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from core.errors import UserError, one_line, quote
from core.files import write_atomically
from core.paths import BakedPath, load_path, to_file_dict
from core.slugs import legacy_file_name, slugify

DEFAULT_STORE = Path("baked")


def save_path(store_dir: str | os.PathLike, path: BakedPath, overwrite: bool = False) -> Path:
    """Write ``path`` into the store and return the file written.

    The file is ``<slugify(prompt)>.pt``, or the existing file already holding this prompt
    (e.g. a legacy file, which ``overwrite`` then upgrades in place rather than leaving two
    files for one prompt). Raises UserError if the prompt is already baked and not
    ``overwrite``, or if the slug's file holds a different prompt. The write is atomic.
    Concurrent writers of the same prompt with ``overwrite`` leave one complete file (the last);
    without it, one of them writes and the others get the UserError.
    """
    store_dir = Path(store_dir)
    data = to_file_dict(path)  # before touching the disk, so a bad recipe or a NaN writes nothing
    if os.path.lexists(store_dir) and not os.path.isdir(store_dir):
        raise UserError(f"the store {quote(store_dir)} is not a folder")
    existing = find_path(store_dir, path.prompt)
    if existing is not None:
        if not overwrite:
            raise UserError(f"already baked: {quote(path.prompt)} in {existing}; use --overwrite")
        target = existing
    else:
        target = store_dir / f"{slugify(path.prompt)}.pt"
        if os.path.lexists(target):
            try:
                held = load_path(target).prompt
            except UserError:
                held = None
            if held is None and not overwrite:
                raise UserError(f"{target} exists and cannot be read as a baked path; use --overwrite")
            if held is not None and held != path.prompt:
                # Should not happen (slugs differ for different prompts); never destroy it.
                raise UserError(
                    f"{target} already holds a different prompt ({quote(held)}); "
                    f"not overwriting it with {quote(path.prompt)}"
                )
            if held == path.prompt and not overwrite:  # saved by another run since find_path looked
                raise UserError(f"already baked: {quote(path.prompt)} in {target}; use --overwrite")
    try:
        # Without --overwrite, never replace: another bake of this prompt may have saved since the check.
        write_atomically(target, lambda handle: torch.save(data, handle), replace=overwrite)
    except FileExistsError:
        raise UserError(f"already baked: {quote(path.prompt)} in {target} (saved meanwhile by another run); "
                        f"use --overwrite") from None
    return target



def _path_files(store_dir: Path) -> list[Path]:
    # Hidden names are temporary files of writes in progress (and the cache directory).
    return sorted(
        p for p in store_dir.glob("*.pt") if not p.name.startswith(".") and p.is_file()
    )


def list_paths(store_dir: str | os.PathLike, embed_dim: int | None = None) -> list[BakedPath]:
    """All baked paths in the store, sorted by prompt. A missing store is empty.

    A file that cannot be read or used (corrupt, NaN or infinity in it, `load_path`), and with `embed_dim`
    a path of another embedding size, is skipped with one warning on stderr each, so one bad file never
    makes the whole store unusable.
    """
    store_dir = Path(store_dir)
    if not store_dir.is_dir():
        return []
    paths = []
    for file in _path_files(store_dir):
        try:
            path = load_path(file)
        except UserError as error:
            print(one_line(f"warning: skipping {error}"), file=sys.stderr)
            continue
        if embed_dim is not None and path.embed_dim != embed_dim:
            print(one_line(f"warning: skipping {file}: its guides are {path.embed_dim}-dim, the model's embeddings "
                           f"{embed_dim}-dim"), file=sys.stderr)
            continue
        paths.append(path)
    paths.sort(key=lambda p: (p.prompt, p.file.name if p.file else ""))
    return paths


def find_path(store_dir: str | os.PathLike, prompt: str) -> Path | None:
    """The file in the store holding ``prompt``, or None.

    Looks at ``<slugify(prompt)>.pt`` and at the name the original tool would have used
    (spaces as '_'), and returns one only if it really holds this prompt.
    """
    store_dir = Path(store_dir)
    names = [f"{slugify(prompt)}.pt"]
    legacy_name = legacy_file_name(prompt)
    if legacy_name is not None and legacy_name not in names:
        names.append(legacy_name)
    for name in names:
        file = store_dir / name
        if not os.path.isfile(file):  # isfile, unlike Path.exists, tolerates over-long names
            continue
        try:
            if load_path(file).prompt == prompt:
                return file
        except UserError:
            continue
    return None


def check_in_store(store_dir: str | os.PathLike, file: str | os.PathLike) -> Path:
    """``file`` if it is a path file directly in the store (a ``.pt`` file, not hidden, not a symbolic link,
    in the store's own folder once links in the folders are resolved); UserError otherwise."""
    store_dir, file = Path(store_dir), Path(file)
    if not store_dir.is_dir():
        raise UserError(f"no store at {store_dir}")
    if os.path.islink(file):
        raise UserError(f"{file} is a symbolic link; only files of the store itself are removed")
    if not file.is_file():
        raise UserError(f"no path file at {file}")
    if os.path.realpath(file.parent) != os.path.realpath(store_dir):
        raise UserError(f"{file} is not in the store {store_dir}; nothing outside it is removed")
    if file.name.startswith(".") or file.suffix != ".pt":
        raise UserError(f"{file} is not a path file of the store (a visible .pt file)")
    return file


def remove_path(store_dir: str | os.PathLike, file: str | os.PathLike) -> Path:
    """Remove one path file from the store (checked by ``check_in_store`` first); returns it.

    The nearest-path cache (``core.nearest``) needs no change: it drops the entries of files that are gone.
    """
    file = check_in_store(store_dir, file)
    file.unlink()
    return file
