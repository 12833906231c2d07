"""auto_microwave's stage targets from the nearest baked paths (core.auto.auto_targets)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.auto import auto_targets
from core.errors import UserError
from core.paths import BakedPath


def _path(prompt: str, guides: torch.Tensor, prompt_embedding: torch.Tensor | None) -> BakedPath:
    return BakedPath(prompt, guides, prompt_embedding, "tiny", guides.shape[1])


def test_transfer_adds_the_mean_offset_of_the_paths(tiny_clip):
    first, second, new = F.normalize(torch.randn(3, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    shift = F.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)), dim=-1) * 0.2
    paths = [_path("one", F.normalize(first + shift, dim=-1), first),
             _path("two", F.normalize(second - shift, dim=-1), second)]
    targets = auto_targets(tiny_clip, paths, new, "transfer")
    offsets = (F.normalize(first + shift, dim=-1) - first + F.normalize(second - shift, dim=-1) - second) / 2
    assert torch.allclose(targets, F.normalize(new + offsets, dim=-1), atol=1e-6)
    # unbaked neighbours (every stage = their prompt) change nothing: the replay is a normal run
    unbaked = [_path("one", first.repeat(3, 1), first), _path("two", second.repeat(3, 1), second)]
    assert torch.allclose(auto_targets(tiny_clip, unbaked, new), new.repeat(3, 1), atol=1e-6)


def test_transfer_encodes_the_prompt_of_a_legacy_path(tiny_clip):
    own = tiny_clip.encode_text(["a lemon"])[0]
    legacy = _path("a lemon", own.repeat(2, 1), None)  # legacy files store no prompt embedding
    new = tiny_clip.encode_text(["a lime"])[0]
    assert torch.allclose(auto_targets(tiny_clip, [legacy], new), F.normalize(new, dim=-1).repeat(2, 1), atol=1e-5)


def test_mean_mixes_paths_with_the_prompt_and_unknown_modes_fail(tiny_clip):
    guides = F.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(2)), dim=-1)
    new = F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(3)), dim=-1)
    targets = auto_targets(tiny_clip, [_path("one", guides, None)], new, "mean", path_weight=0.25)
    assert torch.allclose(targets, 0.25 * guides + 0.75 * new, atol=1e-6)
    with pytest.raises(UserError, match="unknown mode"):
        auto_targets(tiny_clip, [_path("one", guides, None)], new, "nope")

