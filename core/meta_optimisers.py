"""The meta-optimisers: how a bake turns the meta-loss (`core.meta_loss`) into better guides, each in a
path space (free guides, or anchored blend weights over the prompt's anchors, `core.anchors`).

They all take and return a batch of P prompts (guides [P, S, D]); the gradient ones and the elitist ES
compute the whole batch at once, CMA-ES and the GA search prompt by prompt. `META_OPTIMIZERS` declares
them once, with the line `--help` shows for each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from core.anchors import Anchors, anchored_guides
from core.bake_settings import BakeSettings
from core.cma import cma_es
from core.elitist_es import elitist_es
from core.evolve import robust_fitness, trust_region
from core.genetic import genetic
from core.losses import spherical_distance
from core.meta_loss import Critic, initial_guides, replay_loss
from core.models import Clip
from core.render import Pipeline, RenderSettings


MetaStep = Callable[[int, dict], None]


@dataclass
class PathSpace:
    """What a meta-optimiser searches for one batch of prompts: parameters and how they become guides.

    free: the guides themselves, [P, S, D]; anchored: blend weights [P, S, K] over anchor embeddings
    (core.anchors). `decode(parameters, rows)` maps parameters of the prompts `rows` to guides.
    """

    initial: torch.Tensor  # parameters of the unbaked path (replaying it is a normal run)
    decode: Callable[[torch.Tensor, slice], torch.Tensor]
    project: Callable[[torch.Tensor, int], torch.Tensor]  # (population of one prompt's parameters, prompt) -> feasible


def free_space(prompt_embeddings: torch.Tensor, bake: BakeSettings, anchors=None) -> PathSpace:
    """Search the guides directly; evolution keeps each within `trust_angle` of its prompt."""
    def project(population: torch.Tensor, index: int) -> torch.Tensor:
        return trust_region(prompt_embeddings[index], bake.trust_angle)(population)

    return PathSpace(initial_guides(prompt_embeddings, bake.stages), lambda parameters, rows: parameters, project)


def anchored_space(prompt_embeddings: torch.Tensor, bake: BakeSettings, anchors=None) -> PathSpace:
    """Search per-stage blend weights over the prompt's anchors (core.anchors), bounded by `anchor_limit`."""
    if anchors is None:
        raise ValueError("an anchored bake needs the prompts' anchors (core.anchors.prompt_anchors)")

    def decode(coefficients: torch.Tensor, rows: slice) -> torch.Tensor:
        count = coefficients.shape[0] // prompt_embeddings[rows].shape[0]  # a population shares its prompt's anchors
        selected = Anchors(anchors.embeddings[rows].repeat_interleave(count, dim=0),
                           anchors.mask[rows].repeat_interleave(count, dim=0))
        return anchored_guides(prompt_embeddings[rows].repeat_interleave(count, dim=0), selected, coefficients)

    initial = torch.zeros(prompt_embeddings.shape[0], bake.stages, anchors.count, device=prompt_embeddings.device)
    return PathSpace(initial, decode, lambda population, index: population.clamp(-bake.anchor_limit, bake.anchor_limit))


PATH_SPACES = {"free": free_space, "anchored": anchored_space}


def _gradient(space_name: str):
    """Gradient descent through the truncated unrolled inner loop (see `replay`), in a path space.

    Adam on the parameters (element-wise, so prompts in a batch do not interact), each prompt's
    meta-gradient clipped to norm `clip_grad`, optional decaying pull of the guides toward the prompt.
    """

    def optimise(clip: Clip, prompt_embeddings: torch.Tensor, settings: RenderSettings, bake: BakeSettings,
                 seeds: list[int], view_seed: int, pipeline: Pipeline, on_meta_step: MetaStep, anchors=None,
                 critic: Critic | None = None):
        space = PATH_SPACES[space_name](prompt_embeddings, bake, anchors)
        everything = slice(0, prompt_embeddings.shape[0])
        parameters = space.initial.clone().requires_grad_(True)
        lr = bake.meta_lr if space_name == "free" else bake.anchor_lr
        optimizer = torch.optim.Adam([parameters], lr=lr)
        curve = []
        for meta_step in range(bake.meta_steps):
            guides = space.decode(parameters, everything)
            losses = replay_loss(clip, guides, prompt_embeddings, settings, seeds, meta_step, bake.starts,
                                 pipeline, unroll=bake.unroll, view_seed=view_seed,
                                 meta_views=bake.meta_views, critic=critic).mean(dim=1)
            objective = losses.sum()
            if bake.prompt_pull > 0:
                decay = 1 - meta_step / max(1, bake.meta_steps)
                pull = spherical_distance(guides, prompt_embeddings[:, None, :]).mean(dim=1)
                objective = objective + bake.prompt_pull * decay * pull.sum()
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            grad_norms = parameters.grad.flatten(1).norm(dim=1)
            scale = (bake.clip_grad / (grad_norms + 1e-12)).clamp(max=1.0)
            parameters.grad.mul_(scale[:, None, None])
            optimizer.step()
            if space_name != "free":
                with torch.no_grad():
                    parameters.clamp_(-bake.anchor_limit, bake.anchor_limit)
            point = {"meta_step": meta_step, "meta_loss": losses.detach().cpu().tolist(),
                     "grad_norm": grad_norms.detach().cpu().tolist()}
            curve.append(point)
            on_meta_step(meta_step, point)
        with torch.no_grad():
            return space.decode(parameters, everything).detach(), curve

    return optimise


def _evolution(search: str, space_name: str):
    """A meta-optimiser that searches a path space with CMA-ES (`core.cma`) or the GA (`core.genetic`),
    prompt by prompt.

    Fitness of a candidate path = mean + |std| of its final loss over `starts` random starts
    (`core.evolve.robust_fitness`), the whole population evaluated as one batch.
    """

    def optimise(clip: Clip, prompt_embeddings: torch.Tensor, settings: RenderSettings, bake: BakeSettings,
                 seeds: list[int], view_seed: int, pipeline: Pipeline, on_meta_step: MetaStep, anchors=None,
                 critic: Critic | None = None):
        space = PATH_SPACES[space_name](prompt_embeddings, bake, anchors)
        baked, curves = [], []
        starts = max(2, bake.starts)
        for index, prompt in enumerate(prompt_embeddings):
            generation = {"count": 0}
            rows = slice(index, index + 1)

            def fitness(candidates: torch.Tensor) -> torch.Tensor:
                population = candidates.shape[0]
                with torch.no_grad():
                    losses = replay_loss(clip, space.decode(candidates, rows), prompt.expand(population, -1),
                                         settings, [seeds[index]] * population, generation["count"], starts,
                                         pipeline, view_seed=view_seed, meta_views=bake.meta_views,
                                         critic=None if critic is None else critic.rows(index, population))
                return robust_fitness(losses)

            def report(point: dict, best: torch.Tensor) -> None:
                generation["count"] += 1
                on_meta_step(generation["count"] - 1, {"prompt": index, "meta_loss": point["best"], **point})

            def project(population: torch.Tensor) -> torch.Tensor:
                return space.project(population, index)

            x0 = space.initial[index]
            if search == "cma":
                result = cma_es(fitness, x0, bake.sigma, bake.meta_steps, bake.population,
                                       seeds[index], project=project, on_generation=report)
            else:
                result = genetic(fitness, x0, bake.meta_steps, bake.population, seeds[index],
                                        mutation_strength=bake.sigma, project=project, on_generation=report)
            baked.append(space.decode(result.best[None], rows)[0])
            curves.append(result.curve)
        curve = [{"meta_step": step, "meta_loss": [c[step]["best"] for c in curves]}
                 for step in range(min(len(c) for c in curves))]
        return torch.stack(baked), curve

    return optimise


def _batched_evolution(space_name: str):
    """An elitist (1+lambda)-ES (`core.elitist_es`) over a path space, all prompts in one batch.

    Each generation replays, for every prompt, its incumbent path and `population` mutants from the same
    `starts` random starts (a paired comparison); fitness = mean + |std| over those starts.
    """

    def optimise(clip: Clip, prompt_embeddings: torch.Tensor, settings: RenderSettings, bake: BakeSettings,
                 seeds: list[int], view_seed: int, pipeline: Pipeline, on_meta_step: MetaStep, anchors=None,
                 critic: Critic | None = None):
        space = PATH_SPACES[space_name](prompt_embeddings, bake, anchors)
        prompts = prompt_embeddings.shape[0]
        everything = slice(0, prompts)
        starts = max(2, bake.starts)
        generation = {"count": 0}

        def fitness(candidates: torch.Tensor) -> torch.Tensor:
            count = candidates.shape[1]
            with torch.no_grad():
                losses = replay_loss(clip, space.decode(candidates.flatten(0, 1), everything),
                                     prompt_embeddings.repeat_interleave(count, dim=0), settings,
                                     [seed for seed in seeds for _ in range(count)], generation["count"], starts,
                                     pipeline, view_seed=view_seed, meta_views=bake.meta_views,
                                     critic=None if critic is None else critic.repeated(count))
            return robust_fitness(losses).view(prompts, count)

        def report(point: dict) -> None:
            generation["count"] += 1
            on_meta_step(point["generation"], {"meta_loss": point["best"], **point})

        def project(population: torch.Tensor) -> torch.Tensor:
            """Each prompt's rows of a [P * count, ...] population onto that prompt's feasible set."""
            per_prompt = population.view(prompts, -1, *population.shape[1:])
            return torch.cat([space.project(rows, index) for index, rows in enumerate(per_prompt)])

        result = elitist_es(fitness, space.initial, bake.sigma, bake.meta_steps, bake.population, seeds,
                                   project=project, on_generation=report)
        curve = [{"meta_step": point["generation"], "meta_loss": point["best"], "sigma": point["sigma"]}
                 for point in result.curve]
        return space.decode(result.best.to(space.initial.dtype), everything), curve

    return optimise


META_OPTIMIZERS: dict[str, tuple[Callable, str]] = {
    "unrolled": (_gradient("free"), "gradient through a truncated unroll of the inner loop (K steps a stage)"),
    "anchored": (_gradient("anchored"), "that gradient on per-stage blend weights of the prompt's anchor "
                                        "embeddings (its words, the empty caption) instead of free guides"),
    "cma": (_evolution("cma", "free"), "separable CMA-ES over the guides, trust region around the prompt"),
    "anchored-cma": (_evolution("cma", "anchored"), "separable CMA-ES over the anchored blend weights"),
    "anchored-es": (_batched_evolution("anchored"), "elitist (1+lambda)-ES over the anchored blend weights, "
                                                    "every prompt's incumbent and mutants scored on shared starts"),
    "ga": (_evolution("ga", "free"), "genetic algorithm: tournament, elitism, slerp/arithmetic crossover, mutation"),
}

# Meta-optimisers that need `core.anchors.prompt_anchors` of the prompts.
NEEDS_ANCHORS = {name for name in META_OPTIMIZERS if name.startswith("anchored")}
