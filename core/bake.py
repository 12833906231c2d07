"""Baking: meta-optimise a path's guides so that replaying them lands closer to the prompt.

A *path* is one guide embedding per stage ([S, D]). One meta-step draws fresh random pixels, replays
the stages (`core.render.replay`) and scores the final image by its spherical distance to the prompt
embedding (the meta-loss). The meta-optimisers in `META_OPTIMIZERS` turn that score into better
guides; all of them work on a batch of P prompts at once (guides [P, S, D]).

Seeds: every prompt has its own seed, from which its random starts are derived; augmentations are
drawn from a seed shared by the batch. So baking prompts together equals baking them one by one.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from core.losses import spherical_distance
from core.models import Clip
from core.render import Pipeline, RenderSettings, final_loss, random_pixels, replay


@dataclass
class BakeSettings:
    """How a path is baked (the meta part of a recipe)."""

    stages: int = 10
    meta_steps: int = 100
    meta: str = "unrolled"
    meta_lr: float = 0.0005  # larger steps move unit-norm guides far from the prompt (measured: worse held-out)
    unroll: int = 1  # K: differentiated steps at the end of every stage
    starts: int = 1  # random starts per meta-step
    clip_grad: float = 1.0  # per-prompt meta-gradient norm limit
    prompt_pull: float = 0.0  # weight of the decaying pull of the guides toward the prompt
    eval_starts: int = 4  # held-out random starts for the final comparison with a normal run
    population: int = 8  # candidates per generation (cma, ga)
    sigma: float = 0.02  # initial search step (cma) / mutation strength (ga)
    trust_angle: float = 0.5  # radians a guide may turn away from the prompt (cma, ga)
    meta_views: int = 0  # score the final image on this many augmented views (0: the image itself)


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


def replay_loss(clip: Clip, guides: torch.Tensor, prompt_embeddings: torch.Tensor, settings: RenderSettings,
                seeds: list[int], draw: int, starts: int, pipeline: Pipeline, unroll: int = 0,
                view_seed: int = 0, meta_views: int = 0) -> torch.Tensor:
    """Final loss [P, starts] of replaying guides [P,S,D] from `starts` random starts per prompt.

    `meta_views > 0` scores each final image on that many `META_VIEWS` augmentations of it.
    """
    prompts = guides.shape[0]
    start = random_pixels(start_seeds(seeds, draw, starts), settings.size, clip.device)
    targets = guides.repeat_interleave(starts, dim=0)
    pixels = replay(clip, targets, settings, start, view_seed=derive_seed(view_seed, draw), unroll=unroll,
                    pipeline=pipeline)
    views, generator = None, None
    if meta_views > 0:
        from core.transforms import build_chain

        views = build_chain(META_VIEWS, clip.image_size)
        generator = torch.Generator(device=clip.device).manual_seed(derive_seed(view_seed, draw, 1))
    losses = final_loss(clip, pixels, prompt_embeddings.repeat_interleave(starts, dim=0), views, meta_views,
                        generator)
    return losses.view(prompts, starts)


def initial_guides(prompt_embeddings: torch.Tensor, stages: int) -> torch.Tensor:
    """The unbaked path: every stage aims at the prompt (replaying it is a normal run)."""
    return prompt_embeddings[:, None, :].repeat(1, stages, 1).clone()


MetaStep = Callable[[int, dict], None]


def meta_unrolled(clip: Clip, prompt_embeddings: torch.Tensor, settings: RenderSettings, bake: BakeSettings,
                  seeds: list[int], view_seed: int, pipeline: Pipeline, on_meta_step: MetaStep):
    """Gradient descent on the guides through the truncated unrolled inner loop (see `replay`).

    Adam on the guides (element-wise, so prompts in a batch do not interact), each prompt's
    meta-gradient clipped to norm `clip_grad`, optional decaying pull toward the prompt embedding.
    """
    guides = initial_guides(prompt_embeddings, bake.stages).requires_grad_(True)
    optimizer = torch.optim.Adam([guides], lr=bake.meta_lr)
    curve = []
    for meta_step in range(bake.meta_steps):
        losses = replay_loss(clip, guides, prompt_embeddings, settings, seeds, meta_step, bake.starts,
                             pipeline, unroll=bake.unroll, view_seed=view_seed,
                             meta_views=bake.meta_views).mean(dim=1)
        objective = losses.sum()
        if bake.prompt_pull > 0:
            decay = 1 - meta_step / max(1, bake.meta_steps)
            pull = spherical_distance(guides, prompt_embeddings[:, None, :]).mean(dim=1)
            objective = objective + bake.prompt_pull * decay * pull.sum()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        grad_norms = guides.grad.flatten(1).norm(dim=1)
        scale = (bake.clip_grad / (grad_norms + 1e-12)).clamp(max=1.0)
        guides.grad.mul_(scale[:, None, None])
        optimizer.step()
        point = {"meta_step": meta_step, "meta_loss": losses.detach().cpu().tolist(),
                 "grad_norm": grad_norms.detach().cpu().tolist()}
        curve.append(point)
        on_meta_step(meta_step, point)
    return guides.detach(), curve


def _evolution(search: str):
    """A meta-optimiser that searches guide space with `core.evolve` (CMA-ES or GA), prompt by prompt.

    Fitness of a candidate path = mean + |std| of its final loss over `starts` random starts (seed 004),
    the whole population evaluated as one batch; a trust region bounds each guide's angle to the prompt.
    """

    def optimise(clip: Clip, prompt_embeddings: torch.Tensor, settings: RenderSettings, bake: BakeSettings,
                 seeds: list[int], view_seed: int, pipeline: Pipeline, on_meta_step: MetaStep):
        from core import evolve

        baked, curves = [], []
        starts = max(2, bake.starts)
        for index, prompt in enumerate(prompt_embeddings):
            generation = {"count": 0}

            def fitness(candidates: torch.Tensor) -> torch.Tensor:
                population = candidates.shape[0]
                with torch.no_grad():
                    losses = replay_loss(clip, candidates, prompt.expand(population, -1), settings,
                                         [seeds[index]] * population, generation["count"], starts, pipeline,
                                         view_seed=view_seed, meta_views=bake.meta_views)
                return evolve.robust_fitness(losses)

            def report(point: dict, best: torch.Tensor) -> None:
                generation["count"] += 1
                on_meta_step(generation["count"] - 1, {"prompt": index, "meta_loss": point["best"], **point})

            x0 = initial_guides(prompt[None], bake.stages)[0]
            project = evolve.trust_region(prompt, bake.trust_angle)
            if search == "cma":
                result = evolve.cma_es(fitness, x0, bake.sigma, bake.meta_steps, bake.population,
                                       seeds[index], project=project, on_generation=report)
            else:
                result = evolve.genetic(fitness, x0, bake.meta_steps, bake.population, seeds[index],
                                        mutation_strength=bake.sigma, project=project, on_generation=report)
            baked.append(result.best)
            curves.append(result.curve)
        curve = [{"meta_step": step, "meta_loss": [c[step]["best"] for c in curves]}
                 for step in range(min(len(c) for c in curves))]
        return torch.stack(baked), curve

    return optimise


META_OPTIMIZERS: dict[str, tuple[Callable, str]] = {
    "unrolled": (meta_unrolled, "gradient through a truncated unroll of the inner loop (K steps a stage)"),
    "cma": (_evolution("cma"), "separable CMA-ES over the guides, trust region around the prompt"),
    "ga": (_evolution("ga"), "genetic algorithm: tournament, elitism, slerp/arithmetic crossover, mutation"),
}


def bake_prompts(clip: Clip, prompt_embeddings: torch.Tensor, settings: RenderSettings, bake: BakeSettings,
                 seeds: list[int], view_seed: int = 0, on_meta_step: MetaStep | None = None) -> BakeResult:
    """Bake one path per prompt embedding [P, D] as one batched computation.

    Returns the guides and, measured on held-out random starts never used while baking, the final loss
    of the baked path beside that of a normal run with the same total steps.
    """
    if bake.meta not in META_OPTIMIZERS:
        raise ValueError(f"unknown meta-optimiser {bake.meta!r}")
    began = time.monotonic()
    pipeline = Pipeline.build(settings, clip, bake.stages * settings.steps_per_stage)
    optimise, _ = META_OPTIMIZERS[bake.meta]
    guides, curve = optimise(clip, prompt_embeddings, settings, bake, seeds, view_seed, pipeline,
                             on_meta_step or (lambda step, point: None))
    with torch.no_grad():
        baked_loss, normal_loss = compare_with_normal(clip, guides, prompt_embeddings, settings, seeds,
                                                      bake.eval_starts, pipeline, view_seed)
    return BakeResult(guides.detach().float(), curve, baked_loss, normal_loss, time.monotonic() - began,
                      settings=asdict(bake))


def compare_with_normal(clip: Clip, guides: torch.Tensor, prompt_embeddings: torch.Tensor,
                        settings: RenderSettings, seeds: list[int], starts: int, pipeline: Pipeline,
                        view_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean final loss [P] of the path and of a normal run, from the same held-out random starts."""
    both = torch.cat([guides, initial_guides(prompt_embeddings, guides.shape[1])])
    losses = replay_loss(clip, both, torch.cat([prompt_embeddings, prompt_embeddings]), settings,
                         seeds + seeds, HELD_OUT, starts, pipeline, view_seed=derive_seed(view_seed, 7))
    prompts = guides.shape[0]
    return losses[:prompts].mean(dim=1).cpu(), losses[prompts:].mean(dim=1).cpu()
