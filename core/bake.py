"""Baking: meta-optimise a path's guides so that replaying them lands closer to the prompt.

A *path* is one guide embedding per stage ([S, D]). One meta-step draws fresh random pixels, replays
the stages (`core.render.replay`) and scores the final image by its spherical distance to the prompt
embedding (the meta-loss, `core.meta_loss`), as seen by a `Critic` model other than the guide (by
default; the guide's own score teaches paths to fool the guide). The meta-optimisers in
`core.meta_optimisers.META_OPTIMIZERS` turn that score into better guides; `bake_prompts` runs one and
compares the result with a normal run on held-out starts. Every prompt has its own seed (see
`core.meta_loss`), so baking prompts together equals baking them one by one.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from core.bake_settings import BakeSettings
from core.meta_loss import HELD_OUT, Critic, derive_seed, initial_guides, replay_loss
from core.meta_optimisers import META_OPTIMIZERS, MetaStep
from core.models import Clip
from core.render import Pipeline, RenderSettings


@dataclass
class BakeResult:
    """Baked guides [P,S,D] with the bake's curve and the held-out comparison against a normal run."""

    guides: torch.Tensor
    curve: list[dict]
    baked_loss: torch.Tensor  # [P] mean final loss of the baked path on held-out starts
    normal_loss: torch.Tensor  # [P] the same for a normal run (every stage = the prompt)
    seconds: float
    settings: dict = field(default_factory=dict)

    def metrics(self, index: int) -> dict:
        """The metrics of prompt `index`, as stored in its path file."""
        return {
            "baked_loss": float(self.baked_loss[index]),
            "normal_loss": float(self.normal_loss[index]),
            "curve": [{key: (value[index] if isinstance(value, list) else value) for key, value in point.items()}
                      for point in self.curve],
            "seconds": self.seconds,
            "meta": self.settings,
        }


def bake_prompts(clip: Clip, prompt_embeddings: torch.Tensor, settings: RenderSettings, bake: BakeSettings,
                 seeds: list[int], view_seed: int = 0, on_meta_step: MetaStep | None = None,
                 anchors=None, critic: Critic | None = None) -> BakeResult:
    """Bake one path per prompt embedding [P, D] as one batched computation.

    `anchors` (core.anchors.Anchors of the prompts) are needed by the anchored meta-optimisers; a
    `critic` joins the guide in scoring final images (the meta-loss).

    Returns the guides and, measured on held-out random starts never used while baking, the meta-loss
    of the baked path beside that of a normal run with the same total steps.
    """
    if bake.meta not in META_OPTIMIZERS:
        raise ValueError(f"unknown meta-optimiser {bake.meta!r}")
    began = time.monotonic()
    pipeline = Pipeline.build(settings, clip, bake.stages * settings.steps_per_stage)
    optimise, _ = META_OPTIMIZERS[bake.meta]
    guides, curve = optimise(clip, prompt_embeddings, settings, bake, seeds, view_seed, pipeline,
                             on_meta_step or (lambda step, point: None), anchors=anchors, critic=critic)
    with torch.no_grad():
        baked_loss, normal_loss = compare_with_normal(clip, guides, prompt_embeddings, settings, seeds,
                                                      bake.eval_starts, pipeline, view_seed, critic)
    return BakeResult(guides.detach().float(), curve, baked_loss, normal_loss, time.monotonic() - began,
                      settings=asdict(bake))


def compare_with_normal(clip: Clip, guides: torch.Tensor, prompt_embeddings: torch.Tensor,
                        settings: RenderSettings, seeds: list[int], starts: int, pipeline: Pipeline,
                        view_seed: int = 0, critic: Critic | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean final loss [P] of the path and of a normal run, from the same held-out random starts.

    The final image itself is scored (never augmented views, whatever `meta_views` the bake used), by the
    critic when there is one, so the comparison is the same for every bake.
    """
    both = torch.cat([guides, initial_guides(prompt_embeddings, guides.shape[1])])
    losses = replay_loss(clip, both, torch.cat([prompt_embeddings, prompt_embeddings]), settings,
                         seeds + seeds, HELD_OUT, starts, pipeline, view_seed=derive_seed(view_seed, 7),
                         critic=None if critic is None else critic.twice())
    prompts = guides.shape[0]
    return losses[:prompts].mean(dim=1).cpu(), losses[prompts:].mean(dim=1).cpu()
