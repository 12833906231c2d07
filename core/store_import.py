"""`store.py import DIR`: the original tool's paths (bare `[stages, 512]` tensors named after their prompt, see
baked/README.md) converted into the current file format and saved into the store.

A converted path keeps the guides and the prompt the file name gives, is marked as baked with ViT-B/32 (the
original tool's only model), gets the recipe of `recipes/original.yaml` (the original's settings; its stages
set to the file's) so that microwave.py replays it the original way, and no metrics but where it came from.
Its `created` is the legacy file's modification time, what `store.py list` showed for it before. The prompt
embedding is left out (the format allows it): it needs the model, and the nearest-path search computes and
caches it when it is needed. Nothing in the store is replaced without `overwrite`.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from core.errors import UserError
from core.paths import BakedPath, load_path, utc_now_iso
from core.recipes import load_recipe
from core.store import find_path, save_path

LEGACY_RECIPE = "original"


@dataclass
class ImportSummary:
    """What an import did: files converted, files skipped because the store has their prompt, files that are
    not legacy paths (each with the reason)."""

    imported: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    not_legacy: list[tuple[str, str]] = field(default_factory=list)

    def line(self, store: str | os.PathLike) -> str:
        """The summary line printed at the end."""
        return (f"imported {len(self.imported)} path(s) into {store}; {len(self.already)} already there "
                f"(--overwrite replaces them), {len(self.not_legacy)} file(s) not a legacy path")


def converted(path: BakedPath, recipe: dict) -> BakedPath:
    """A legacy path in the current format: the same guides and prompt, `recipe` with the path's stages, no
    prompt embedding, metrics recording where and when it was imported from."""
    return BakedPath(prompt=path.prompt, guides=path.guides, prompt_embedding=None, model_name=path.model_name,
                     embed_dim=path.embed_dim, recipe={**recipe, "stages": path.stages},
                     metrics={"imported_from": path.file.name if path.file else "", "imported": utc_now_iso()},
                     created=path.created)


def _legacy_or_reason(file: Path) -> tuple[BakedPath | None, str]:
    """The legacy path in `file`, or None and why it is not one (a line naming the file)."""
    if file.suffix != ".pt":
        return None, f"{file}: not a .pt file"
    try:
        path = load_path(file)
    except UserError as error:
        return None, str(error)
    if not path.legacy:
        return None, f"{file}: already in the current format (copy it into the store as it is)"
    if not bool(torch.isfinite(path.guides).all()):
        return None, f"{file}: its guides hold NaN or infinite values"
    return path, ""


def import_legacy(source: str | os.PathLike, store: str | os.PathLike, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> ImportSummary:
    """Convert every legacy path file in the folder `source` (not its sub-folders) into `store`.

    A prompt the store already has is skipped with a line (replaced with `overwrite`; a legacy file of the
    same prompt in the store is then upgraded in place); a file that is not a legacy path gets one warning
    line on stderr and is skipped. Hidden files are ignored.
    """
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"no folder at {source} to import from")
    recipe = load_recipe(LEGACY_RECIPE)
    summary = ImportSummary()
    for file in sorted(item for item in source.iterdir() if not item.name.startswith(".") and item.is_file()):
        path, reason = _legacy_or_reason(file)
        if path is None:
            print(f"warning: skipping {reason}", file=sys.stderr)
            summary.not_legacy.append((str(file), reason))
            continue
        existing = find_path(store, path.prompt)
        if existing is not None and not overwrite:
            log(f"already in the store: {path.prompt!r} ({existing}); skipped")
            summary.already.append(path.prompt)
            continue
        try:
            saved = save_path(store, converted(path, recipe), overwrite=overwrite)
        except UserError as error:  # saved meanwhile by another run, or a different file at the name
            log(f"not imported: {error}")
            summary.already.append(path.prompt)
            continue
        log(f"imported {file.name} -> {saved}")
        summary.imported.append(path.prompt)
    return summary
