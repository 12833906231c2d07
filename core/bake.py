"""Baking: meta-optimise a path's guides so that replaying them lands closer to the prompt.

A *path* is one guide embedding per stage ([S, D]). One meta-step draws fresh random pixels, replays
the stages (`core.render.replay`) and scores the final image by its spherical distance to the prompt
embedding (the meta-loss), as seen by a `Critic` model other than the guide (by default; the guide's own
score teaches paths to fool the guide). The meta-optimisers in `META_OPTIMIZERS` turn that score into better
guides. They all take and return a batch of P prompts (guides [P, S, D]); the gradient ones and the
elitist ES compute the whole batch at once, CMA-ES and the GA search prompt by prompt.

Seeds: every prompt has its own seed, from which its random starts are derived; augmentations are
drawn from a seed shared by the batch. So baking prompts together equals baking them one by one.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from core.anchors import MAX_WORD_ANCHORS
from core.losses import spherical_distance
from core.models import Clip
from core.render import Pipeline, RenderSettings, final_loss, random_pixels, replay


@dataclass
class BakeSettings:
    """How a path is baked (the meta part of a recipe)."""

    stages: int = 10
    meta_steps: int = 30  # measured on the scenes models: 100 at meta-lr 1e-3 over-fits the critic (README)
    meta: str = "unrolled"
    meta_lr: float = 0.001  # measured on the scenes models: 0.001 lifts the judge most; 0.004 overfits the critic
    unroll: int = 1  # K: differentiated steps at the end of every stage
    starts: int = 1  # random starts per meta-step (2 measured no better, at twice the cost)
    clip_grad: float = 1.0  # per-prompt meta-gradient norm limit
    prompt_pull: float = 0.0  # weight of the decaying pull of the guides toward the prompt
    eval_starts: int = 4  # held-out random starts for the final comparison with a normal run
    population: int = 8  # candidates per generation (cma, ga)
    sigma: float = 0.02  # initial search step (cma) / mutation strength (ga)
    trust_angle: float = 0.5  # radians a guide may turn away from the prompt (cma, ga)
    meta_views: int = 0  # score the final image on this many augmented views (0: the image itself)
    anchor_lr: float = 0.05  # learning rate of the anchored blend weights
    anchor_limit: float = 2.0  # bound on every anchored blend weight
    anchor_words: int = MAX_WORD_ANCHORS  # content words of the prompt used as anchors (0: the generic anchor alone)
    critic: str = "auto"  # the model that scores the final images (see `Critic`, models.resolve_critic); "none"
    critic_weight: float = 1.0  # its share of the meta-loss


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


def _scored_loss(clip: Clip, pixels: torch.Tensor, prompt_embeddings: torch.Tensor, meta_views: int,
                 seed: int) -> torch.Tensor:
    """Final loss [N] of pixels by `clip`, on `meta_views` augmented views when > 0 (see META_VIEWS)."""
    views, generator = None, None
    if meta_views > 0:
        from core.transforms import build_chain

        views = build_chain(META_VIEWS, clip.image_size)
        generator = torch.Generator(device=clip.device).manual_seed(seed)
    return final_loss(clip, pixels, prompt_embeddings, views, meta_views, generator)


def replay_loss(clip: Clip, guides: torch.Tensor, prompt_embeddings: torch.Tensor, settings: RenderSettings,
                seeds: list[int], draw: int, starts: int, pipeline: Pipeline, unroll: int = 0,
                view_seed: int = 0, meta_views: int = 0, critic: Critic | None = None) -> torch.Tensor:
    """Final loss [P, starts] of replaying guides [P,S,D] from `starts` random starts per prompt.

    `meta_views > 0` scores each final image on that many `META_VIEWS` augmentations of it; a `critic`
    scores it too (see `Critic`).
    """
    prompts = guides.shape[0]
    start = random_pixels(start_seeds(seeds, draw, starts), settings.size, clip.device)
    targets = guides.repeat_interleave(starts, dim=0)
    pixels = replay(clip, targets, settings, start, view_seed=derive_seed(view_seed, draw), unroll=unroll,
                    pipeline=pipeline)
    view_draw = derive_seed(view_seed, draw, 1)
    losses = torch.zeros(prompts * starts, device=pixels.device)
    if critic is None or critic.weight < 1:
        guide_weight = 1.0 if critic is None else 1 - critic.weight
        losses = losses + guide_weight * _scored_loss(clip, pixels, prompt_embeddings.repeat_interleave(starts, dim=0),
                                                      meta_views, view_draw)
    if critic is not None and critic.weight > 0:
        losses = losses + critic.weight * _scored_loss(critic.clip, pixels,
                                                       critic.prompt_embeddings.repeat_interleave(starts, dim=0),
                                                       meta_views, view_draw)
    return losses.view(prompts, starts)


def initial_guides(prompt_embeddings: torch.Tensor, stages: int) -> torch.Tensor:
    """The unbaked path: every stage aims at the prompt (replaying it is a normal run)."""
    return prompt_embeddings[:, None, :].repeat(1, stages, 1)


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
    from core import evolve

    def project(population: torch.Tensor, index: int) -> torch.Tensor:
        return evolve.trust_region(prompt_embeddings[index], bake.trust_angle)(population)

    return PathSpace(initial_guides(prompt_embeddings, bake.stages), lambda parameters, rows: parameters, project)


def anchored_space(prompt_embeddings: torch.Tensor, bake: BakeSettings, anchors=None) -> PathSpace:
    """Search per-stage blend weights over the prompt's anchors (core.anchors), bounded by `anchor_limit`."""
    from core.anchors import Anchors, anchored_guides

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
    """A meta-optimiser that searches a path space with `core.evolve` (CMA-ES or GA), prompt by prompt.

    Fitness of a candidate path = mean + |std| of its final loss over `starts` random starts
    (`core.evolve.robust_fitness`), the whole population evaluated as one batch.
    """

    def optimise(clip: Clip, prompt_embeddings: torch.Tensor, settings: RenderSettings, bake: BakeSettings,
                 seeds: list[int], view_seed: int, pipeline: Pipeline, on_meta_step: MetaStep, anchors=None,
                 critic: Critic | None = None):
        from core import evolve

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
                return evolve.robust_fitness(losses)

            def report(point: dict, best: torch.Tensor) -> None:
                generation["count"] += 1
                on_meta_step(generation["count"] - 1, {"prompt": index, "meta_loss": point["best"], **point})

            def project(population: torch.Tensor) -> torch.Tensor:
                return space.project(population, index)

            x0 = space.initial[index]
            if search == "cma":
                result = evolve.cma_es(fitness, x0, bake.sigma, bake.meta_steps, bake.population,
                                       seeds[index], project=project, on_generation=report)
            else:
                result = evolve.genetic(fitness, x0, bake.meta_steps, bake.population, seeds[index],
                                        mutation_strength=bake.sigma, project=project, on_generation=report)
            baked.append(space.decode(result.best[None], rows)[0])
            curves.append(result.curve)
        curve = [{"meta_step": step, "meta_loss": [c[step]["best"] for c in curves]}
                 for step in range(min(len(c) for c in curves))]
        return torch.stack(baked), curve

    return optimise


def _batched_evolution(space_name: str):
    """An elitist (1+lambda)-ES (`core.evolve.elitist_es`) over a path space, all prompts in one batch.

    Each generation replays, for every prompt, its incumbent path and `population` mutants from the same
    `starts` random starts (a paired comparison); fitness = mean + |std| over those starts.
    """

    def optimise(clip: Clip, prompt_embeddings: torch.Tensor, settings: RenderSettings, bake: BakeSettings,
                 seeds: list[int], view_seed: int, pipeline: Pipeline, on_meta_step: MetaStep, anchors=None,
                 critic: Critic | None = None):
        from core import evolve

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
            return evolve.robust_fitness(losses).view(prompts, count)

        def report(point: dict) -> None:
            generation["count"] += 1
            on_meta_step(point["generation"], {"meta_loss": point["best"], **point})

        def project(population: torch.Tensor) -> torch.Tensor:
            """Each prompt's rows of a [P * count, ...] population onto that prompt's feasible set."""
            per_prompt = population.view(prompts, -1, *population.shape[1:])
            return torch.cat([space.project(rows, index) for index, rows in enumerate(per_prompt)])

        result = evolve.elitist_es(fitness, space.initial, bake.sigma, bake.meta_steps, bake.population, seeds,
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
