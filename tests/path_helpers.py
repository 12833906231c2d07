"""Helpers shared by the path-store tests (test_store, test_slugs, test_nearest): small fake paths and
legacy files."""

import hashlib
from pathlib import Path

import torch

from core.paths import BakedPath


def make_path(prompt="a red square", stages=3, dim=4, model="fake", embedding=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return BakedPath(
        prompt=prompt,
        guides=torch.randn(stages, dim, generator=gen),
        prompt_embedding=torch.randn(dim, generator=gen) if embedding else None,
        model_name=model,
        embed_dim=dim,
        recipe={"method": "meta", "lr": 0.05, "steps": [10, 20], "nested": {"ok": True, "none": None}},
        metrics={"loss": 0.25},
        created="2025-01-02T03:04:05+00:00",
    )


def write_legacy(directory: Path, prompt: str, stages=2, dim=3, value=None) -> Path:
    """A legacy-style file: a bare tensor named after the prompt, saved requiring grad."""
    guides = torch.randn(stages, dim) if value is None else torch.tensor(value, dtype=torch.float32)
    file = directory / (prompt.replace(" ", "_") + ".pt")
    torch.save(guides.requires_grad_(True), file)
    return file


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def sha8(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]
