"""The path file format: a ``BakedPath`` (what was baked for one prompt) and reading, writing and checking
one file of it.

A baked *path* is the per-stage CLIP target embeddings ("guides", ``[stages, dim]``) found for one
prompt. ``load_path`` reads both our format (a plain dict, ``weights_only``) and the original tool's
bare-tensor files; ``to_file_dict`` is what ``core.store.save_path`` writes. The format is described
in ``baked/README.md``.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import sys
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor

from core.errors import UserError, cut, quote
from core.limits import MAX_PATH_FILE_BYTES, MAX_STAGES
from core.safe_yaml import check_nesting
from core.slugs import legacy_prompt

FORMAT_NAME = "bake-microwave-path"
FORMAT_VERSION = 1

# The original tool did not record its model; every legacy file we know of is ViT-B/32.
LEGACY_MODEL_NAME = "ViT-B/32"

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


def cpu_float(t: Tensor) -> Tensor:
    """A detached float32 CPU copy of ``t``."""
    # clone: torch.save writes a view's whole storage, so a slice of a big tensor would
    # otherwise drag all of it into the file.
    return t.detach().to(device="cpu", dtype=torch.float32).clone(
        memory_format=torch.contiguous_format
    )


def _check_plain(value, where: str) -> None:
    """Only values ``torch.load(weights_only=True)`` can read back may go into a file, and no non-finite
    number (UserError: a bake that diverged is not saved)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"not saving a path whose {where} is {value}: the bake diverged")
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserError(f"not saving a path whose {where} holds NaN or infinity: the bake diverged")
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


def to_file_dict(path: BakedPath) -> dict:
    """The plain dict a path file holds (``torch.save`` of it); TypeError for values that could not be read
    back with ``weights_only``, UserError for NaN or infinity anywhere (nothing non-finite is saved)."""
    _check_plain(path.guides, f"guides of {quote(path.prompt)}")
    _check_plain(path.prompt_embedding, f"prompt embedding of {quote(path.prompt)}")
    _check_plain(path.recipe, "recipe")
    _check_plain(path.metrics, "metrics")
    embedding = path.prompt_embedding
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "prompt": path.prompt,
        "prompt_embedding": None if embedding is None else cpu_float(embedding),
        "guides": cpu_float(path.guides),
        "model_name": path.model_name,
        "embed_dim": int(path.embed_dim),
        "recipe": path.recipe,
        "metrics": path.metrics,
        "created": path.created,
    }



def load_path(file: str | os.PathLike, device: str | torch.device = "cpu") -> BakedPath:
    """Read a baked path (our format or a legacy bare tensor) with its tensors on ``device``.

    Loading is ``weights_only`` (no arbitrary code) and always mapped to the CPU first, since
    legacy files were saved on ``cuda:0``. Any unreadable, malformed or too-new file raises
    UserError with one line naming the file.
    """
    file = Path(file)
    if not os.path.isfile(file):  # os.path: False, not an error, for an over-long name
        raise UserError(f"no baked path file at {cut(file)}")
    if os.path.getsize(file) > MAX_PATH_FILE_BYTES:
        raise UserError(f"{file} is larger than {MAX_PATH_FILE_BYTES // 2**20} MB, too large for a baked path")
    try:
        with warnings.catch_warnings():  # torch's notes on a file's pickle protocol: it is read or refused below
            warnings.simplefilter("ignore")
            data = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only reports both refused classes and plain garbage as UnpicklingError.
        refused = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(error), re.IGNORECASE)
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
    _check_loaded(file, path)
    if torch.device(device) != torch.device("cpu"):
        path.guides = path.guides.to(device)
        if path.prompt_embedding is not None:
            path.prompt_embedding = path.prompt_embedding.to(device)
    return path


def _check_loaded(file: Path, path: BakedPath) -> None:
    """A path that could be read but not used: non-finite numbers (they would render black images and break
    every nearest-path order), more stages than any recipe may have, or a recipe nested absurdly deep."""
    tensors = [path.guides] + ([path.prompt_embedding] if path.prompt_embedding is not None else [])
    if not all(bool(torch.isfinite(tensor).all()) for tensor in tensors):
        raise UserError(f"{file} holds NaN or infinity in its guides or prompt embedding")
    if path.stages > MAX_STAGES:
        raise UserError(f"{file} has {path.stages} stages; at most {MAX_STAGES}")
    check_nesting(path.recipe, f"{file}: its recipe")
    check_nesting(path.metrics, f"{file}: its metrics")


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
        guides=cpu_float(guides),  # detach: the original tool saved them requiring grad
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
        guides=cpu_float(guides),
        prompt_embedding=None if embedding is None else cpu_float(embedding),
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
            f"baked path {quote(path.prompt)} has {path.embed_dim}-dim guides from {baked_with}, "
            f"but {model_name} has {embed_dim}-dim embeddings; bake it again with {model_name}"
        )
    if path.model_name is not None and path.model_name != model_name:
        print(
            f"warning: baked path {quote(path.prompt)} was baked with {path.model_name}, "
            f"using it with {model_name}",
            file=sys.stderr,
        )
