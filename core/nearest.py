"""Which baked prompts are closest to this one? ``nearest_paths``, with a cache of the stored prompts'
text embeddings so that each is run through the text encoder only once per model
(``<store>/.cache/embeddings-<slug(model)>.pt``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor

from core.errors import UserError
from core.files import write_atomically
from core.limits import MAX_CACHE_FILE_BYTES
from core.losses import spherical_distance
from core.paths import BakedPath, cpu_float
from core.slugs import slugify
from core.store import list_paths

CACHE_DIR_NAME = ".cache"
_CACHE_FORMAT_NAME = "bake-microwave-embedding-cache"
_CACHE_FORMAT_VERSION = 1


def _cache_file(store_dir: Path, model_name: str) -> Path | None:
    """The cache file of a model, or None (no cache) when `.cache` is not a plain folder of the store: a
    symlink is never followed, so the cache is never read from or written to outside the store."""
    cache_dir = store_dir / CACHE_DIR_NAME
    if os.path.islink(cache_dir) or (os.path.lexists(cache_dir) and not os.path.isdir(cache_dir)):
        print(f"warning: not using {cache_dir}: it is a symlink or not a folder (prompts are encoded each time)",
              file=sys.stderr)
        return None
    return cache_dir / f"embeddings-{slugify(model_name)}.pt"


def _read_cache(cache_file: Path | None, model_name: str) -> dict:
    # The cache is disposable: anything wrong with it just means encoding again.
    if cache_file is None or os.path.islink(cache_file) or not os.path.isfile(cache_file):
        return {}
    if os.path.getsize(cache_file) > MAX_CACHE_FILE_BYTES:
        return {}
    try:
        data = torch.load(cache_file, map_location="cpu", weights_only=True)
    except Exception:
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != _CACHE_FORMAT_NAME
        or data.get("version") != _CACHE_FORMAT_VERSION
        or data.get("model_name") != model_name
        or not isinstance(data.get("entries"), dict)
    ):
        return {}
    return data["entries"]


def _file_key(file: Path, prompt: str) -> dict:
    stat = file.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "prompt": prompt}


def _usable(embedding, dim: int | None) -> bool:
    """A prompt embedding that can be ranked: a finite vector (of `dim` numbers, if given)."""
    return (isinstance(embedding, Tensor) and embedding.dim() == 1 and (dim is None or embedding.shape[0] == dim)
            and bool(torch.isfinite(embedding).all()))


def _known_embeddings(paths: list[BakedPath], cached: dict, model_name: str, dim: int | None = None
                      ) -> tuple[list[Tensor | None], dict[str, dict], list[int]]:
    """Each path's prompt embedding where its file or the cache has it (None where not), the cache
    entries to keep (with their keys; an embedding still to be added), and the indexes left to encode.
    Only finite embeddings of `dim` numbers are taken from a file or the cache; others are encoded again."""
    embeddings: list[Tensor | None] = []
    entries: dict[str, dict] = {}
    to_encode: list[int] = []
    for i, path in enumerate(paths):
        if path.model_name == model_name and _usable(path.prompt_embedding, dim):
            embeddings.append(path.prompt_embedding)
            continue
        key = _file_key(path.file, path.prompt)
        entry = cached.get(path.file.name)
        if (
            isinstance(entry, dict)
            and all(entry.get(k) == v for k, v in key.items())
            and _usable(entry.get("embedding"), dim)
        ):
            embeddings.append(entry["embedding"])
            entries[path.file.name] = entry
        else:
            embeddings.append(None)
            entries[path.file.name] = key
            to_encode.append(i)
    return embeddings, entries, to_encode


def prompt_embeddings(
    store_dir: str | os.PathLike,
    model_name: str,
    encode_text: Callable[[list[str]], Tensor],
    embed_dim: int | None = None,
) -> tuple[list[BakedPath], Tensor]:
    """All usable baked paths of the store and their prompts' text embeddings ``[N, D]`` for a model.

    With ``embed_dim``, paths of another embedding size are skipped with a warning (as unreadable and
    non-finite ones always are, `list_paths`), so one such file never fails the search.
    Embeddings come from, in order: the file itself (our format, baked with ``model_name``),
    the cache ``<store>/.cache/embeddings-<slug(model_name)>.pt`` (entries keyed by file name,
    size, mtime and prompt), or one batched call ``encode_text(prompts)`` for all the rest.
    The cache is rewritten (atomically) only when something was encoded or a file went away, and
    not at all when the store cannot be written (it is only a cache). With no paths the tensor is ``[0, 0]``.
    """
    store_dir = Path(store_dir)
    paths = list_paths(store_dir, embed_dim)
    cache_file = _cache_file(store_dir, model_name)
    cached = _read_cache(cache_file, model_name)
    embeddings, entries, to_encode = _known_embeddings(paths, cached, model_name, embed_dim)
    if to_encode:
        encoded = encode_text([paths[i].prompt for i in to_encode])
        if encoded.dim() != 2 or encoded.shape[0] != len(to_encode):
            raise ValueError(
                f"encode_text returned {list(encoded.shape)} for {len(to_encode)} prompts"
            )
        for row, i in zip(cpu_float(encoded), to_encode):
            embeddings[i] = row
            entries[paths[i].file.name]["embedding"] = row
    if cache_file is not None and (to_encode or set(entries) != set(cached)):
        _write_cache(cache_file, model_name, entries)

    if not paths:
        return paths, torch.zeros(0, 0)
    dims = {int(e.shape[-1]) for e in embeddings}
    if len(dims) != 1:
        raise UserError(
            f"prompt embeddings in {store_dir} have different sizes {sorted(dims)} for "
            f"{model_name}; delete {cache_file} and try again"
        )
    return paths, torch.stack([cpu_float(e) for e in embeddings])


def _write_cache(cache_file: Path, model_name: str, entries: dict) -> None:
    cache = {"format": _CACHE_FORMAT_NAME, "version": _CACHE_FORMAT_VERSION, "model_name": model_name,
             "entries": entries}
    try:
        write_atomically(cache_file, lambda handle: torch.save(cache, handle))
    except (OSError, UserError):  # a read-only or full store: the search works without its cache
        pass


def nearest_paths(
    store_dir: str | os.PathLike,
    model_name: str,
    encode_text: Callable[[list[str]], Tensor],
    query_embedding: Tensor,
    k: int,
    exclude_prompts: Iterable[str] = (),
) -> list[tuple[BakedPath, float]]:
    """The ``k`` baked paths whose prompts are closest to ``query_embedding`` ``[D]``.

    Returns ``(path, spherical distance)`` pairs, nearest first (ties by prompt). Paths whose
    prompt is in ``exclude_prompts``, paths whose guides are not ``D``-dimensional (baked
    with another model size, unusable here; a warning each) and files with NaN or infinity in them
    are left out, so no such file ever changes the order. Fewer than ``k`` left: all of them;
    none left: UserError.
    """
    if k < 1:
        raise UserError(f"the number of nearest paths must be at least 1, got {k}")
    if query_embedding.dim() != 1:
        raise ValueError(f"query_embedding must be [D], got {list(query_embedding.shape)}")
    store_dir = Path(store_dir)
    dim = int(query_embedding.shape[0])
    excluded = set(exclude_prompts)
    if not bool(torch.isfinite(query_embedding).all()):
        raise ValueError("the query embedding is not finite")
    paths, embeddings = prompt_embeddings(store_dir, model_name, encode_text, dim)

    keep = [i for i, p in enumerate(paths) if p.prompt not in excluded
            and bool(torch.isfinite(embeddings[i]).all())]
    if not keep:
        raise UserError(f"no baked paths of {dim}-dim guides to choose from in {store_dir} ({len(paths)} usable)")
    candidates = embeddings[keep]
    if candidates.shape[1] != dim:
        raise UserError(
            f"prompt embeddings in {store_dir} are {candidates.shape[1]}-dim but the query "
            f"is {dim}-dim for {model_name}"
        )
    distances = spherical_distance(cpu_float(query_embedding)[None, :], candidates)
    # Stable sort keeps the prompt order of list_paths among equal distances.
    order = sorted(range(len(keep)), key=lambda j: float(distances[j]))
    return [(paths[keep[j]], float(distances[j])) for j in order[:k]]
