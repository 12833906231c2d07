"""Which baked prompts are closest to this one? ``nearest_paths``, with a cache of the stored prompts'
text embeddings so that each is run through the text encoder only once per model
(``<store>/.cache/embeddings-<slug(model)>.pt``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor

from core.errors import UserError
from core.files import write_atomically
from core.losses import spherical_distance
from core.paths import BakedPath, cpu_float
from core.slugs import slugify
from core.store import list_paths

CACHE_DIR_NAME = ".cache"
_CACHE_FORMAT_NAME = "bake-microwave-embedding-cache"
_CACHE_FORMAT_VERSION = 1


def _cache_file(store_dir: Path, model_name: str) -> Path:
    return store_dir / CACHE_DIR_NAME / f"embeddings-{slugify(model_name)}.pt"


def _read_cache(cache_file: Path, model_name: str) -> dict:
    # The cache is disposable: anything wrong with it just means encoding again.
    if not cache_file.is_file():
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


def _known_embeddings(paths: list[BakedPath], cached: dict, model_name: str
                      ) -> tuple[list[Tensor | None], dict[str, dict], list[int]]:
    """Each path's prompt embedding where its file or the cache has it (None where not), the cache
    entries to keep (with their keys; an embedding still to be added), and the indexes left to encode."""
    embeddings: list[Tensor | None] = []
    entries: dict[str, dict] = {}
    to_encode: list[int] = []
    for i, path in enumerate(paths):
        if path.prompt_embedding is not None and path.model_name == model_name:
            embeddings.append(path.prompt_embedding)
            continue
        key = _file_key(path.file, path.prompt)
        entry = cached.get(path.file.name)
        if (
            isinstance(entry, dict)
            and all(entry.get(k) == v for k, v in key.items())
            and isinstance(entry.get("embedding"), Tensor)
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
) -> tuple[list[BakedPath], Tensor]:
    """All baked paths of the store and their prompts' text embeddings ``[N, D]`` for a model.

    Embeddings come from, in order: the file itself (our format, baked with ``model_name``),
    the cache ``<store>/.cache/embeddings-<slug(model_name)>.pt`` (entries keyed by file name,
    size, mtime and prompt), or one batched call ``encode_text(prompts)`` for all the rest.
    The cache is rewritten (atomically) only when something was encoded or a file went away.
    With no paths the tensor is ``[0, 0]``.
    """
    store_dir = Path(store_dir)
    paths = list_paths(store_dir)
    cache_file = _cache_file(store_dir, model_name)
    cached = _read_cache(cache_file, model_name)
    embeddings, entries, to_encode = _known_embeddings(paths, cached, model_name)
    if to_encode:
        encoded = encode_text([paths[i].prompt for i in to_encode])
        if encoded.dim() != 2 or encoded.shape[0] != len(to_encode):
            raise ValueError(
                f"encode_text returned {list(encoded.shape)} for {len(to_encode)} prompts"
            )
        for row, i in zip(cpu_float(encoded), to_encode):
            embeddings[i] = row
            entries[paths[i].file.name]["embedding"] = row
    if to_encode or set(entries) != set(cached):
        cache = {
            "format": _CACHE_FORMAT_NAME,
            "version": _CACHE_FORMAT_VERSION,
            "model_name": model_name,
            "entries": entries,
        }
        write_atomically(cache_file, lambda handle: torch.save(cache, handle))

    if not paths:
        return paths, torch.zeros(0, 0)
    dims = {int(e.shape[-1]) for e in embeddings}
    if len(dims) != 1:
        raise UserError(
            f"prompt embeddings in {store_dir} have different sizes {sorted(dims)} for "
            f"{model_name}; delete {cache_file} and try again"
        )
    return paths, torch.stack([cpu_float(e) for e in embeddings])


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
    prompt is in ``exclude_prompts`` and paths whose guides are not ``D``-dimensional (baked
    with another model size, unusable here) are left out. Fewer than ``k`` left: all of them;
    none left: UserError.
    """
    if k < 1:
        raise UserError(f"the number of nearest paths must be at least 1, got {k}")
    if query_embedding.dim() != 1:
        raise ValueError(f"query_embedding must be [D], got {list(query_embedding.shape)}")
    store_dir = Path(store_dir)
    dim = int(query_embedding.shape[0])
    excluded = set(exclude_prompts)
    paths, embeddings = prompt_embeddings(store_dir, model_name, encode_text)

    keep = [i for i, p in enumerate(paths) if p.prompt not in excluded and p.embed_dim == dim]
    if not keep:
        other_dims = sorted({p.embed_dim for p in paths if p.embed_dim != dim})
        why = f" ({len(paths)} stored" + (
            f"; guides of size {other_dims} do not fit {model_name}'s {dim})" if other_dims else ")"
        )
        raise UserError(f"no baked paths to choose from in {store_dir}{why}")
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
