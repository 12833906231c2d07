"""The meta-loss of a bake: replay guides from random starts and score the final images, by the guide and
by a `Critic` model that never guides; the seeds every draw of a bake is made from.

Seeds: every prompt has its own seed, from which its random starts are derived; augmentations are
drawn from a seed shared by the batch. So baking prompts together equals baking them one by one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.models import Clip
from core.render import Pipeline, RenderSettings, final_loss, replay
from core.transforms import build_chain


def derive_seed(seed: int, *parts: int) -> int:
    """A seed for one draw (a meta-step, a start) derived from a prompt's seed; stable across runs."""
    value = int(seed) & 0xFFFFFFFFFFFF
    for part in parts:
        value = (value * 6364136223846793005 + 1442695040888963407 + int(part)) & 0x7FFFFFFFFFFFFFFF
    return value


def start_seeds(seeds: list[int], draw: int, starts: int) -> list[int]:
    """Seeds of `starts` random starts for every prompt (prompt-major) at one draw of a bake."""
    return [derive_seed(seed, draw, start) for seed in seeds for start in range(starts)]


HELD_OUT = -1  # draw index of the held-out evaluation starts; meta-steps use 0, 1, 2, ...

# How the meta-loss looks at a final image when `meta_views > 0`: blurred, shifted, rescaled, noisy
# views, so a path is rewarded for images whose content survives them, not for adversarial texture.
META_VIEWS = [
    {"cutouts": {"scale": [0.75, 1.0], "whole": 0.25, "flip": 0.0, "degree": [-8, 8], "noise": 0.05}},
    {"blur": {"kernel_size": 3, "sigma": 0.8}},
]


@dataclass
class Critic:
    """A second model that scores a bake's final images (it never guides the pixels).

    The guide's own loss rewards images that fool the guide; a critic rewards paths whose images another
    model also recognises. `weight` mixes the two: meta-loss = (1 - weight) * guide + weight * critic.
    """

    clip: Clip
    prompt_embeddings: torch.Tensor  # [P, D] in the critic's own embedding space
    weight: float = 1.0

    def rows(self, index: int, count: int) -> "Critic":
        """The critic of prompt `index` alone, repeated for a population of `count` candidates."""
        return Critic(self.clip, self.prompt_embeddings[index: index + 1].expand(count, -1), self.weight)

    def repeated(self, count: int) -> "Critic":
        """Every prompt's critic repeated `count` times in a row (prompt-major, like a batched population)."""
        return Critic(self.clip, self.prompt_embeddings.repeat_interleave(count, dim=0), self.weight)

    def twice(self) -> "Critic":
        """The critic of the prompts listed twice (a path and its normal run side by side)."""
        return Critic(self.clip, torch.cat([self.prompt_embeddings, self.prompt_embeddings]), self.weight)


def _scored_loss(clip: Clip, images: torch.Tensor, prompt_embeddings: torch.Tensor, meta_views: int,
                 seed: int) -> torch.Tensor:
    """Final loss [N] of images by `clip`, on `meta_views` augmented views when > 0 (see META_VIEWS)."""
    views, generator = None, None
    if meta_views > 0:
        views = build_chain(META_VIEWS, clip.image_size)
        generator = torch.Generator(device=clip.device).manual_seed(seed)
    return final_loss(clip, images, prompt_embeddings, views, meta_views, generator)


def replay_loss(clip: Clip, guides: torch.Tensor, prompt_embeddings: torch.Tensor, settings: RenderSettings,
                seeds: list[int], draw: int, starts: int, pipeline: Pipeline, unroll: int = 0,
                view_seed: int = 0, meta_views: int = 0, critic: Critic | None = None) -> torch.Tensor:
    """Final loss [P, starts] of replaying guides [P,S,D] from `starts` random starts per prompt.

    `meta_views > 0` scores each final image on that many `META_VIEWS` augmentations of it; a `critic`
    scores it too (see `Critic`).
    """
    prompts = guides.shape[0]
    start = pipeline.drawer.init(start_seeds(seeds, draw, starts), clip.device)
    targets = guides.repeat_interleave(starts, dim=0)
    pixels = replay(clip, targets, settings, start, view_seed=derive_seed(view_seed, draw), unroll=unroll,
                    pipeline=pipeline)
    images = pipeline.drawer.image(pixels)
    view_draw = derive_seed(view_seed, draw, 1)
    losses = torch.zeros(prompts * starts, device=images.device)
    if critic is None or critic.weight < 1:
        guide_weight = 1.0 if critic is None else 1 - critic.weight
        losses = losses + guide_weight * _scored_loss(clip, images, prompt_embeddings.repeat_interleave(starts, dim=0),
                                                      meta_views, view_draw)
    if critic is not None and critic.weight > 0:
        losses = losses + critic.weight * _scored_loss(critic.clip, images,
                                                       critic.prompt_embeddings.repeat_interleave(starts, dim=0),
                                                       meta_views, view_draw)
    return losses.view(prompts, starts)


def initial_guides(prompt_embeddings: torch.Tensor, stages: int) -> torch.Tensor:
    """The unbaked path: every stage aims at the prompt (replaying it is a normal run)."""
    return prompt_embeddings[:, None, :].repeat(1, stages, 1)
