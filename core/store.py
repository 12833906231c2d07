"""The path store: a directory (default ``baked/``) holding one file per baked prompt.

A baked *path* is the per-stage CLIP target embeddings ("guides", ``[stages, dim]``) found for
one prompt. This module names the files (``slugify``), writes them atomically (``save_path``),
reads both our format and the original tool's bare-tensor files (``load_path``), and answers
"which baked prompts are closest to this one?" (``nearest_paths``) with a cache of prompt
embeddings so that each stored prompt is run through the text encoder only once per model.

Names: a *path* is a ``BakedPath`` (what was baked), a *file* is where it is stored; ``find_path``
returns the file (a ``pathlib.Path``) and ``load_path`` reads the ``BakedPath`` from it.

The file format is described in ``baked/README.md``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import torch
from torch import Tensor

from core.errors import UserError
from core.losses import spherical_distance

FORMAT_NAME = "bake-microwave-path"
FORMAT_VERSION = 1
DEFAULT_STORE = Path("baked")

# The original tool did not record its model; every legacy file we know of is ViT-B/32.
LEGACY_MODEL_NAME = "ViT-B/32"

CACHE_DIR_NAME = ".cache"
_CACHE_FORMAT_NAME = "bake-microwave-embedding-cache"
_CACHE_FORMAT_VERSION = 1

_MAX_STEM = 80
_HASH_LEN = 8
# A prompt whose slug is just "spaces become underscores": lower-case ASCII, digits, '.', '-',
# spaces, starting with a letter or digit. Lower case only, so that two prompts differing only
# in case cannot collide on a case-insensitive file system (macOS, Windows).
_EXACT_PROMPT = re.compile(r"[a-z0-9][a-z0-9. -]*")
_HASH_SUFFIX = re.compile(r"-[0-9a-f]{%d}" % _HASH_LEN)
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9.-]+")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)
_UNREADABLE = "not a readable torch file (corrupt, truncated or not saved by torch)"
_REQUIRED_KEYS = (
    "format", "version", "prompt", "prompt_embedding", "guides",
    "model_name", "embed_dim", "recipe", "metrics", "created",
)


def utc_now_iso() -> str:
    """The current time as ISO-8601 UTC, to the second (e.g. ``2025-01-31T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(eq=False)  # eq on tensors is ambiguous; compare fields explicitly where needed
class BakedPath:
    """One baked prompt: its guides ``[stages, embed_dim]`` and where they came from.

    ``prompt_embedding`` is the model's text embedding of ``prompt`` (None for legacy files),
    ``recipe`` the settings used to bake, ``metrics`` how well it baked. ``legacy`` marks a
    file from the original tool; ``file`` is where it was loaded from (None if not from disk).
    """

    prompt: str
    guides: Tensor
    prompt_embedding: Tensor | None
    model_name: str | None
    embed_dim: int
    recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    created: str = field(default_factory=utc_now_iso)
    legacy: bool = False
    file: Path | None = None

    def __post_init__(self) -> None:
        # Programming mistakes, not user mistakes: a path built in code with the wrong shapes.
        if self.guides.dim() != 2 or self.guides.shape[1] != self.embed_dim:
            raise ValueError(
                f"guides must be [stages, {self.embed_dim}], got {list(self.guides.shape)}"
            )
        if self.prompt_embedding is not None and self.prompt_embedding.shape != (self.embed_dim,):
            raise ValueError(
                f"prompt_embedding must be [{self.embed_dim}], "
                f"got {list(self.prompt_embedding.shape)}"
            )

    def __repr__(self) -> str:  # the default would print every guide value
        return (
            f"BakedPath(prompt={self.prompt!r}, stages={self.stages}, embed_dim={self.embed_dim}, "
            f"model_name={self.model_name!r}, legacy={self.legacy}, file={self.file})"
        )

    @property
    def stages(self) -> int:
        """Number of stages (rows of ``guides``)."""
        return int(self.guides.shape[0])


# ----------------------------------------------------------------------------- file names


def slugify(prompt: str) -> str:
    """A safe, deterministic file stem for ``prompt``; distinct prompts get distinct stems.

    Rule: if the prompt is lower-case ASCII letters, digits, '.', '-' and spaces, starts with a
    letter or digit, has no '..', does not end in '.', is at most 80 characters, is not a
    Windows device name and does not itself end in '-' + 8 hex digits, the stem is the prompt
    with spaces replaced by '_' (reversible: '_' back to space). Otherwise the stem is a
    sanitised, shortened form of the prompt followed by '-' and the first 8 hex digits of
    sha1(prompt as UTF-8): accents folded to ASCII, every run of other characters (including
    '_' and spaces) replaced by one '_', runs of dots collapsed, leading '.', '_' and '-'
    stripped, cut to 70 characters, trailing '.', '_' and '-' stripped, 'prompt' if nothing is
    left, '_' prefixed to a Windows device name. The two forms can never be equal (only hashed
    stems end in '-' + 8 hex digits), so stems collide only if two sha1 prefixes do.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("the prompt is empty")
    if _is_exact(prompt):
        return prompt.replace(" ", "_")

    body = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii")
    body = _UNSAFE_RUN.sub("_", body)
    body = re.sub(r"\.{2,}", ".", body)
    body = body.lstrip("._-")
    # 10 = '-' + 8 hex digits + a possible '_' prefix for device names.
    body = body[: _MAX_STEM - _HASH_LEN - 2].rstrip("._-")
    if not body:
        body = "prompt"
    if _is_windows_reserved(body):
        body = "_" + body
    digest = hashlib.sha1(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    return f"{body}-{digest}"


def _is_exact(prompt: str) -> bool:
    return (
        len(prompt) <= _MAX_STEM
        and _EXACT_PROMPT.fullmatch(prompt) is not None
        and ".." not in prompt
        and not prompt.endswith(".")
        # Only hashed stems may end like a hash, which keeps the two forms apart.
        and _HASH_SUFFIX.search(prompt[-(_HASH_LEN + 1):]) is None
        and not _is_windows_reserved(prompt)
    )


def _is_windows_reserved(stem: str) -> bool:
    # Windows reserves the device names with any extension too ("nul.txt"), in any case.
    return stem.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED


def legacy_prompt(file: str | os.PathLike) -> str:
    """The prompt encoded in a legacy file's name: drop ``.pt``, '_' becomes a space."""
    name = Path(file).name
    if name.endswith(".pt"):
        name = name[: -len(".pt")]
    return name.replace("_", " ")


def _legacy_file_name(prompt: str) -> str | None:
    """The name the original tool would have used for ``prompt``, or None if unsafe."""
    name = prompt.replace(" ", "_") + ".pt"
    if any(c in prompt for c in "/\\\0") or prompt.startswith("."):
        return None
    return name


# ----------------------------------------------------------------------------- writing


def write_atomically(target: str | os.PathLike, write: Callable[[BinaryIO], None], replace: bool = True) -> Path:
    """Write a file so that ``target`` is either absent/old or complete, never partial.

    ``write`` gets a binary file object for a temporary file in the same directory (a hidden
    ``.<name>.*.tmp``), which is flushed, fsynced and then renamed over ``target`` with
    ``os.replace``. With ``replace=False`` it is published with ``os.link`` instead, which fails with
    FileExistsError if ``target`` exists, however recently it appeared. On any error the temporary
    file is removed and the error re-raised.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); a stored path or image is an ordinary file.
        os.chmod(tmp, 0o644)
        if replace:
            os.replace(tmp, target)
        else:
            _publish_new(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _publish_new(tmp: Path, target: Path) -> None:
    """Give the complete file ``tmp`` the name ``target`` unless that name exists (FileExistsError)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a narrow race remains)
        if os.path.lexists(target):
            raise FileExistsError(target) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) on Windows.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cpu_float(t: Tensor) -> Tensor:
    # clone: torch.save writes a view's whole storage, so a slice of a big tensor would
    # otherwise drag all of it into the file.
    return t.detach().to(device="cpu", dtype=torch.float32).clone(
        memory_format=torch.contiguous_format
    )


def _check_plain(value, where: str) -> None:
    """Only values ``torch.load(weights_only=True)`` can read back may go into a file."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, Tensor):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a string")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}; only plain values can be stored")


def _to_file_dict(path: BakedPath) -> dict:
    _check_plain(path.recipe, "recipe")
    _check_plain(path.metrics, "metrics")
    embedding = path.prompt_embedding
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "prompt": path.prompt,
        "prompt_embedding": None if embedding is None else _cpu_float(embedding),
        "guides": _cpu_float(path.guides),
        "model_name": path.model_name,
        "embed_dim": int(path.embed_dim),
        "recipe": path.recipe,
        "metrics": path.metrics,
        "created": path.created,
    }


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
    data = _to_file_dict(path)  # before touching the disk, so a bad recipe writes nothing
    existing = find_path(store_dir, path.prompt)
    if existing is not None:
        if not overwrite:
            raise UserError(f"already baked: {path.prompt!r} in {existing}; use --overwrite")
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
                    f"{target} already holds a different prompt ({held!r}); "
                    f"not overwriting it with {path.prompt!r}"
                )
            if held == path.prompt and not overwrite:  # saved by another run since find_path looked
                raise UserError(f"already baked: {path.prompt!r} in {target}; use --overwrite")
    try:
        # Without --overwrite, never replace: another bake of this prompt may have saved since the check.
        write_atomically(target, lambda handle: torch.save(data, handle), replace=overwrite)
    except FileExistsError:
        raise UserError(f"already baked: {path.prompt!r} in {target} (saved meanwhile by another run); "
                        f"use --overwrite") from None
    return target


# ----------------------------------------------------------------------------- reading


def load_path(file: str | os.PathLike, device: str | torch.device = "cpu") -> BakedPath:
    """Read a baked path (our format or a legacy bare tensor) with its tensors on ``device``.

    Loading is ``weights_only`` (no arbitrary code) and always mapped to the CPU first, since
    legacy files were saved on ``cuda:0``. Any unreadable, malformed or too-new file raises
    UserError with one line naming the file.
    """
    file = Path(file)
    if not file.is_file():
        raise UserError(f"no baked path file at {file}")
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only reports both refused classes and plain garbage as UnpicklingError.
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise UserError(
                f"{file}: refusing to load, it contains a {refused.group(1)} object "
                "(only tensors and plain values are allowed)"
            ) from None
        raise UserError(f"{file} is {_UNREADABLE}") from None
    except OSError as error:
        raise UserError(f"cannot read {file}: {error.strerror or error}") from None
    except Exception:  # torch raises many types for a corrupt file; all mean the same
        what = "empty, not a readable torch file" if file.stat().st_size == 0 else _UNREADABLE
        raise UserError(f"{file} is {what}") from None

    if isinstance(data, Tensor):
        path = _from_legacy_tensor(file, data)
    elif isinstance(data, dict):
        path = _from_file_dict(file, data)
    else:
        raise UserError(f"{file} holds a {type(data).__name__}, not a baked path")
    if torch.device(device) != torch.device("cpu"):
        path.guides = path.guides.to(device)
        if path.prompt_embedding is not None:
            path.prompt_embedding = path.prompt_embedding.to(device)
    return path


def _from_legacy_tensor(file: Path, guides: Tensor) -> BakedPath:
    if guides.dim() != 2 or not guides.is_floating_point() or 0 in guides.shape:
        raise UserError(
            f"{file} holds a tensor of shape {list(guides.shape)} ({guides.dtype}), "
            "not guides [stages, dim]"
        )
    prompt = legacy_prompt(file)
    if not prompt.strip():
        raise UserError(f"{file}: cannot tell the prompt from the file name")
    created = datetime.fromtimestamp(file.stat().st_mtime, timezone.utc).isoformat(
        timespec="seconds"
    )
    return BakedPath(
        prompt=prompt,
        guides=_cpu_float(guides),  # detach: the original tool saved them requiring grad
        prompt_embedding=None,
        model_name=LEGACY_MODEL_NAME,
        embed_dim=int(guides.shape[1]),
        recipe={},
        metrics={},
        created=created,
        legacy=True,
        file=file,
    )


def _from_file_dict(file: Path, data: dict) -> BakedPath:
    if data.get("format") != FORMAT_NAME:
        raise UserError(f"{file} is not a baked path file (format {data.get('format')!r})")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{file} has no valid format version ({version!r})")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{file} was written by a newer version (format {version}; "
            f"this tool reads up to {FORMAT_VERSION}); upgrade to read it"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise UserError(f"{file} is missing {', '.join(missing)}")

    prompt, guides, embedding = data["prompt"], data["guides"], data["prompt_embedding"]
    embed_dim = data["embed_dim"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError(f"{file} has no prompt")
    if not isinstance(guides, Tensor) or guides.dim() != 2 or not guides.is_floating_point():
        raise UserError(f"{file}: guides are not a float tensor [stages, dim]")
    if not isinstance(embed_dim, int) or guides.shape[1] != embed_dim or guides.shape[0] == 0:
        raise UserError(
            f"{file}: guides have shape {list(guides.shape)} but embed_dim is {embed_dim!r}"
        )
    if embedding is not None and (
        not isinstance(embedding, Tensor) or embedding.shape != (embed_dim,)
    ):
        shape = list(embedding.shape) if isinstance(embedding, Tensor) else type(embedding).__name__
        raise UserError(f"{file}: prompt_embedding is {shape}, expected [{embed_dim}]")
    if data["model_name"] is not None and not isinstance(data["model_name"], str):
        raise UserError(f"{file}: model_name is not a string")
    for key in ("recipe", "metrics"):
        if not isinstance(data[key], dict):
            raise UserError(f"{file}: {key} is not a dict")
    if not isinstance(data["created"], str):
        raise UserError(f"{file}: created is not a string")

    return BakedPath(
        prompt=prompt,
        guides=_cpu_float(guides),
        prompt_embedding=None if embedding is None else _cpu_float(embedding),
        model_name=data["model_name"],
        embed_dim=embed_dim,
        recipe=data["recipe"],
        metrics=data["metrics"],
        created=data["created"],
        legacy=False,
        file=file,
    )


def check_compatible(path: BakedPath, embed_dim: int, model_name: str) -> None:
    """Raise UserError if ``path``'s guides cannot be used with a model of ``embed_dim``.

    Same dimension but a different model name is allowed (the guides would load) but likely
    meaningless, so it prints a warning on stderr.
    """
    baked_with = path.model_name or "an unknown model"
    if path.embed_dim != embed_dim:
        raise UserError(
            f"baked path {path.prompt!r} has {path.embed_dim}-dim guides from {baked_with}, "
            f"but {model_name} has {embed_dim}-dim embeddings; bake it again with {model_name}"
        )
    if path.model_name is not None and path.model_name != model_name:
        print(
            f"warning: baked path {path.prompt!r} was baked with {path.model_name}, "
            f"using it with {model_name}",
            file=sys.stderr,
        )


def _path_files(store_dir: Path) -> list[Path]:
    # Hidden names are temporary files of writes in progress (and the cache directory).
    return sorted(
        p for p in store_dir.glob("*.pt") if not p.name.startswith(".") and p.is_file()
    )


def list_paths(store_dir: str | os.PathLike) -> list[BakedPath]:
    """All baked paths in the store, sorted by prompt. A missing store is empty.

    A file that cannot be read is skipped with a warning on stderr, so one bad file does not
    make the whole store unusable.
    """
    store_dir = Path(store_dir)
    if not store_dir.is_dir():
        return []
    paths = []
    for file in _path_files(store_dir):
        try:
            paths.append(load_path(file))
        except UserError as error:
            print(f"warning: skipping {error}", file=sys.stderr)
    paths.sort(key=lambda p: (p.prompt, p.file.name if p.file else ""))
    return paths


def find_path(store_dir: str | os.PathLike, prompt: str) -> Path | None:
    """The file in the store holding ``prompt``, or None.

    Looks at ``<slugify(prompt)>.pt`` and at the name the original tool would have used
    (spaces as '_'), and returns one only if it really holds this prompt.
    """
    store_dir = Path(store_dir)
    names = [f"{slugify(prompt)}.pt"]
    legacy_name = _legacy_file_name(prompt)
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


# ----------------------------------------------------------------------------- nearest search


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

    embeddings: list[Tensor | None] = []
    new_entries: dict[str, dict] = {}
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
            new_entries[path.file.name] = entry
        else:
            embeddings.append(None)
            new_entries[path.file.name] = key
            to_encode.append(i)

    if to_encode:
        encoded = encode_text([paths[i].prompt for i in to_encode])
        if encoded.dim() != 2 or encoded.shape[0] != len(to_encode):
            raise ValueError(
                f"encode_text returned {list(encoded.shape)} for {len(to_encode)} prompts"
            )
        for row, i in zip(_cpu_float(encoded), to_encode):
            embeddings[i] = row
            new_entries[paths[i].file.name]["embedding"] = row

    if to_encode or set(new_entries) != set(cached):
        cache = {
            "format": _CACHE_FORMAT_NAME,
            "version": _CACHE_FORMAT_VERSION,
            "model_name": model_name,
            "entries": new_entries,
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
    return paths, torch.stack([_cpu_float(e) for e in embeddings])


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
    distances = spherical_distance(_cpu_float(query_embedding)[None, :], candidates)
    # Stable sort keeps the prompt order of list_paths among equal distances.
    order = sorted(range(len(keep)), key=lambda j: float(distances[j]))
    return [(paths[keep[j]], float(distances[j])) for j in order[:k]]


__all__ = [
    "FORMAT_VERSION", "DEFAULT_STORE", "LEGACY_MODEL_NAME", "BakedPath", "slugify",
    "legacy_prompt", "write_atomically", "save_path", "load_path", "check_compatible",
    "list_paths", "find_path", "prompt_embeddings", "nearest_paths",
    "utc_now_iso",
]
