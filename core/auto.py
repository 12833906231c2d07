"""auto_microwave: stage targets for a prompt never baked, made from the baked paths nearest to it."""
from __future__ import annotations

import torch

from core.errors import UserError
from core.models import Clip
from core.render import blend

# How auto_microwave turns the nearest paths into stage targets for a new prompt, and the default weight
# of the paths in it (--path-weight).
AUTO_MODES = {
    "transfer": ("each path's offset from its own prompt (stage minus prompt embedding), averaged and added "
                 "to the new prompt: what baking changed, without the neighbours' content", 1.0),
    "mean": ("per-stage mean of the paths, mixed with the new prompt", 0.3),
    "splice": ("each stage from one path at random, mixed with the new prompt", 0.3),
}


def auto_targets(clip: Clip, paths: list, embedding: torch.Tensor, mode: str = "transfer",
                 path_weight: float | None = None, seed: int = 0) -> torch.Tensor:
    """Stage targets [S, D] for a prompt embedding [D] from baked paths (core.paths.BakedPath) of other prompts.

    `transfer` (default; measured best, see the README): unit(prompt + w * mean_k(path_k - prompt_k)).
    `mean` / `splice`: (1 - w) * prompt + w * mix of the paths. `w` = `path_weight` or the mode's default.
    """
    if mode not in AUTO_MODES:
        raise UserError(f"unknown mode '{mode}' (use {', '.join(AUTO_MODES)})")
    weight = AUTO_MODES[mode][1] if path_weight is None else path_weight
    embedding = torch.nn.functional.normalize(embedding.float(), dim=-1)
    if mode == "transfer":
        stages = min(path.stages for path in paths)
        offsets = []
        for path in paths:
            own = path.prompt_embedding
            if own is None:  # legacy paths store no embedding: encode their prompt
                own = clip.encode_text([path.prompt], truncate=True)[0]
            own = torch.nn.functional.normalize(own.float().to(embedding.device), dim=-1)
            guides = torch.nn.functional.normalize(path.guides[:stages].float().to(embedding.device), dim=-1)
            offsets.append(guides - own)
        return torch.nn.functional.normalize(embedding + weight * torch.stack(offsets).mean(dim=0), dim=-1)
    mixed = mix_paths([path.guides for path in paths], mode, seed)
    return blend(mixed.to(embedding.device), embedding, 1 - weight)


def mix_paths(guides: list[torch.Tensor], mode: str, seed: int) -> torch.Tensor:
    """One path [S, D] from k paths: `mean` per stage, or `splice` (each stage from a random path)."""
    stages = min(g.shape[0] for g in guides)
    stacked = torch.stack([torch.nn.functional.normalize(g[:stages].float(), dim=-1) for g in guides])
    if mode == "mean":
        return stacked.mean(dim=0)
    if mode == "splice":
        choice = torch.randint(len(guides), (stages,), generator=torch.Generator().manual_seed(seed))
        return stacked[choice, torch.arange(stages)]
    raise UserError(f"unknown mode '{mode}' (use mean or splice)")
