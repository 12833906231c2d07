"""auto_microwave: stage targets for a prompt never baked, made from the baked paths nearest to it, or
predicted from its embedding by a regression fitted on every baked path of the store (`predict`)."""
from __future__ import annotations

from collections import Counter

import torch

from core.errors import UserError
from core.models import Clip
from core.render import blend
from core.ridge import RidgeFit, fit_ridge

# How auto_microwave turns the nearest paths into stage targets for a new prompt, and the default weight
# of the paths in it (--path-weight).
AUTO_MODES = {
    "transfer": ("each path's offset from its own prompt (stage minus prompt embedding), averaged and added "
                 "to the new prompt: what baking changed, without the neighbours' content", 1.0),
    "mean": ("per-stage mean of the paths, mixed with the new prompt", 0.3),
    "splice": ("each stage from one path at random, mixed with the new prompt", 0.3),
    "predict": ("the offsets predicted from the new prompt's embedding by a ridge regression fitted on every "
                "baked path of the model in the store (--k unused; penalty by leave-one-out), added to the new "
                "prompt", 1.0),
}
# The mode when none is chosen (measured best on the tuning prompts, see the README), and the one used
# instead when the store has too few paths to learn from.
DEFAULT_MODE, FALLBACK_MODE = "predict", "transfer"


def auto_targets(clip: Clip, paths: list, embedding: torch.Tensor, mode: str = "transfer",
                 path_weight: float | None = None, seed: int = 0, stages: int | None = None) -> torch.Tensor:
    """Stage targets [S, D] for a prompt embedding [D] from baked paths (core.paths.BakedPath) of other prompts.

    `transfer`: unit(prompt + w * mean_k(path_k - prompt_k)).
    `mean` / `splice`: (1 - w) * prompt + w * mix of the paths. `w` = `path_weight` or the mode's default.
    `predict` (the scripts' default, `choose_mode`; measured best, see the README): unit(prompt + w * offsets
    predicted for the prompt by `fit_offsets` on `paths`, the store's paths but the prompt's own); `stages`: the
    stage count of the paths it learns from (None: the most common).
    """
    if mode not in AUTO_MODES:
        raise UserError(f"unknown mode '{mode}' (use {', '.join(AUTO_MODES)})")
    weight = AUTO_MODES[mode][1] if path_weight is None else path_weight
    embedding = torch.nn.functional.normalize(embedding.float(), dim=-1)
    if mode == "predict":
        fit = fit_offsets(clip, predict_paths(paths, clip, stages))
        offsets = fit.predict(embedding.cpu()).to(embedding.device).reshape(-1, embedding.shape[-1])
        return torch.nn.functional.normalize(embedding + weight * offsets, dim=-1)
    if mode == "transfer":
        _, offsets = path_offsets(clip, paths, min(path.stages for path in paths))
        return torch.nn.functional.normalize(embedding + weight * offsets.to(embedding.device).mean(dim=0), dim=-1)
    mixed = mix_paths([path.guides for path in paths], mode, seed)
    return blend(mixed.to(embedding.device), embedding, 1 - weight)


def path_offsets(clip: Clip, paths: list, stages: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each path's unit prompt embedding [N, D] and its first `stages` unit guides minus it [N, stages, D] (CPU):
    what baking changed. Legacy paths store no prompt embedding: their prompts are encoded (one batch)."""
    missing = [path.prompt for path in paths if path.prompt_embedding is None]
    encoded = iter(clip.encode_text(missing, truncate=True).cpu() if missing else [])
    own = torch.stack([(next(encoded) if path.prompt_embedding is None else path.prompt_embedding).float().cpu()
                       for path in paths])
    own = torch.nn.functional.normalize(own, dim=-1)
    guides = torch.stack([torch.nn.functional.normalize(path.guides[:stages].float().cpu(), dim=-1) for path in paths])
    return own, guides - own[:, None, :]


def learnable_paths(paths: list, clip: Clip, stages: int | None = None) -> tuple[list, int | None]:
    """The paths `predict` can learn from, and their stage count: baked with `clip`'s model, of its embedding
    size, and of `stages` stages (None: the most common count among them, the larger on a tie)."""
    usable = [path for path in paths if path.model_name == clip.name and path.embed_dim == clip.embed_dim]
    if stages is None and usable:
        counts = Counter(path.stages for path in usable)
        stages = max(counts, key=lambda count: (counts[count], count))
    return [path for path in usable if path.stages == stages], stages


def predict_paths(paths: list, clip: Clip, stages: int | None = None) -> list:
    """`learnable_paths`; fewer than 2 is a UserError."""
    chosen, stages = learnable_paths(paths, clip, stages)
    if len(chosen) < 2:
        raise UserError(f"--mode predict needs at least 2 baked paths of {clip.name} with {stages or 'any'} stages "
                        f"to learn from; the store has {len(chosen)} (bake more, or use --mode transfer)")
    return chosen


def choose_mode(mode: str | None, paths: list, clip: Clip, stages: int | None = None,
                left_out: list[str] = ()) -> tuple[str, str | None]:
    """`mode`, or when None the default: `predict` when at least 2 `paths` are learnable (with each prompt of
    `left_out` left out in turn), else `transfer`, with a notice saying why (None when there is nothing to say)."""
    if mode is not None:
        return mode, None
    counts = [len(learnable_paths([path for path in paths if path.prompt != prompt], clip, stages)[0])
              for prompt in left_out] or [len(learnable_paths(paths, clip, stages)[0])]
    if min(counts) >= 2:
        return DEFAULT_MODE, None
    return FALLBACK_MODE, (f"notice: auto predicts the stage offsets from at least 2 baked paths of {clip.name}; "
                           f"the store has {min(counts)}, so it transfers those of the nearest instead "
                           f"(--mode {FALLBACK_MODE})")


def fit_offsets(clip: Clip, paths: list) -> RidgeFit:
    """A ridge regression from unit prompt embeddings [D] to the paths' offsets [S * D] (`path_offsets`),
    its penalty chosen by leave-one-out error on the paths themselves (`core.ridge`)."""
    own, offsets = path_offsets(clip, paths, paths[0].stages)
    return fit_ridge(own, offsets.flatten(1))


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
