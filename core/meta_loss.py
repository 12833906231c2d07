"""The meta-loss of a bake: replay guides from random starts and score the final images, by the guide and
by a `Critic` model that never guides; the seeds every draw of a bake is made from.

Seeds: every prompt has its own seed, from which its random starts are derived; augmentations are
drawn from a seed shared by the batch. So baking prompts together equals baking them one by one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.models import Clip
from core.losses import caption_contrast, spherical_distance
from core.render import Pipeline, RenderSettings, final_embeddings, replay
from core.scene_prompts import contrast_captions
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


# Logit scale of the critic's caption contrast: about what the scenes CLIPs learned (21-22); measured with 20.
CONTRAST_SCALE = 20.0


@dataclass
class Critic:
    """A second model that scores a bake's final images (it never guides the pixels).

    The guide's own loss rewards images that fool the guide; a critic rewards paths whose images another
    model also recognises. `weight` mixes the two: meta-loss = (1 - weight) * guide + weight * critic.
    The critic's loss is its spherical distance to the prompt, plus `contrast_weight` times the
    cross-entropy of the prompt among `contrast` captions (`contrast_captions`: for a scene prompt, the
    captions that differ from it in one stated attribute), so a path is rewarded for images that show the
    stated colour, shape and place rather than another.
    """

    clip: Clip
    prompt_embeddings: torch.Tensor  # [P, D] in the critic's own embedding space
    weight: float = 1.0
    contrast: torch.Tensor | None = None  # [P, G, C, D]: per attribute, the prompt's caption then its twins
    contrast_mask: torch.Tensor | None = None  # [P, G, C]: which of `contrast` are captions
    contrast_weight: float = 0.0

    def _rows(self, pick) -> "Critic":
        """This critic with `pick` applied to every per-prompt tensor."""
        has_contrast = self.contrast is not None
        return Critic(self.clip, pick(self.prompt_embeddings), self.weight,
                      pick(self.contrast) if has_contrast else None,
                      pick(self.contrast_mask) if has_contrast else None, self.contrast_weight)

    def rows(self, index: int, count: int) -> "Critic":
        """The critic of prompt `index` alone, repeated for a population of `count` candidates."""
        return self._rows(lambda rows: rows[index: index + 1].expand(count, *rows.shape[1:]))

    def repeated(self, count: int) -> "Critic":
        """Every prompt's critic repeated `count` times in a row (prompt-major, like a batched population)."""
        return self._rows(lambda rows: rows.repeat_interleave(count, dim=0))

    def twice(self) -> "Critic":
        """The critic of the prompts listed twice (a path and its normal run side by side)."""
        return self._rows(lambda rows: torch.cat([rows, rows]))

    def loss(self, images: torch.Tensor, meta_views: int, seed: int) -> torch.Tensor:
        """The critic's loss [N] of N final images, each row of this critic repeated N / P times."""
        repeat = images.shape[0] // self.prompt_embeddings.shape[0]
        critic = self.repeated(repeat) if repeat > 1 else self
        embeddings = _final_embeddings(self.clip, images, meta_views, seed)
        loss = spherical_distance(embeddings, critic.prompt_embeddings[:, None, :]).mean(dim=1)
        if self.contrast is None or self.contrast_weight <= 0:
            return loss
        return loss + self.contrast_weight * caption_contrast(embeddings, critic.contrast, critic.contrast_mask,
                                                              CONTRAST_SCALE)


def encode_contrast(clip: Clip, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The contrast captions of each prompt (`contrast_captions`) as embeddings [P, G, C, D] and mask [P, G, C];
    all-False rows for prompts that are not scene prompts."""
    groups = [contrast_captions(prompt) for prompt in prompts]
    width = max((len(group) for found in groups for group in found), default=1)
    depth = max((len(found) for found in groups), default=1)
    contrast = torch.zeros(len(prompts), max(depth, 1), width, clip.embed_dim, device=clip.device)
    mask = torch.zeros(len(prompts), max(depth, 1), width, dtype=torch.bool, device=clip.device)
    for row, found in enumerate(groups):
        for column, captions in enumerate(found):
            contrast[row, column, :len(captions)] = clip.encode_text(captions, truncate=True).float()
            mask[row, column, :len(captions)] = True
    return contrast, mask


def _final_embeddings(clip: Clip, images: torch.Tensor, meta_views: int, seed: int) -> torch.Tensor:
    """Embeddings [N, V, D] of final images by `clip`, on `meta_views` augmented views when > 0 (see META_VIEWS)."""
    views, generator = None, None
    if meta_views > 0:
        views = build_chain(META_VIEWS, clip.image_size)
        generator = torch.Generator(device=clip.device).manual_seed(seed)
    return final_embeddings(clip, images, views, meta_views, generator)


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
        embeddings = _final_embeddings(clip, images, meta_views, view_draw)
        losses = losses + guide_weight * clip.distance(
            embeddings, prompt_embeddings.repeat_interleave(starts, dim=0)[:, None, :]).mean(dim=1)
    if critic is not None and critic.weight > 0:
        losses = losses + critic.weight * critic.loss(images, meta_views, view_draw)
    return losses.view(prompts, starts)


def initial_guides(prompt_embeddings: torch.Tensor, stages: int) -> torch.Tensor:
    """The unbaked path: every stage aims at the prompt (replaying it is a normal run)."""
    return prompt_embeddings[:, None, :].repeat(1, stages, 1)
