"""An elitist (1+lambda)-ES for P problems side by side (`elitist_es`): each problem's incumbent is
scored again with its mutants on shared starts, one fitness call a generation for all problems.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from core.evolve import Projection, seeded_generator, working_dtype


BatchFitnessFn = Callable[[Tensor], Tensor]
"""Scores candidates ``[P, N, *shape]`` (N for each of P problems) as ``[P, N]``; lower is better."""


@dataclass
class BatchedResult:
    """What `elitist_es` found for each of P problems: ``best [P, *shape]`` and a curve of ``best [P]`` lists."""

    best: Tensor
    best_fitness: Tensor
    curve: list[dict] = field(default_factory=list)


def elitist_es(fitness_fn: BatchFitnessFn, x0: Tensor, sigma0: float, generations: int, offspring: int,
               seeds: list[int], project: Projection | None = None,
               on_generation: Callable[[dict], None] | None = None) -> BatchedResult:
    """A (1+lambda)-ES run for P problems side by side, all candidates scored in one call a generation.

    Every generation each problem's incumbent (the best so far) is scored again *together with* its
    `offspring` mutants (``incumbent + sigma * N(0, I)``): one fitness call scores them all on the same random
    starts, so the comparison is paired and a lucky earlier score cannot keep a worse incumbent. A mutant
    that beats the incumbent replaces it and widens that problem's step (x1.5); otherwise the step shrinks
    (x0.85), close to the 1/5 success rule. Noise for problem p comes from `seeds[p]` alone, so a problem's
    result does not depend on the others in the batch.
    """
    if len(seeds) != x0.shape[0]:
        raise ValueError(f"need one seed per problem: {len(seeds)} seeds for {x0.shape[0]} problems")
    dtype = working_dtype(x0)
    incumbent = x0.to(dtype).clone()
    problems = incumbent.shape[0]
    sigma = torch.full((problems,), float(sigma0), device=incumbent.device, dtype=dtype)
    generators = [seeded_generator(torch.device("cpu"), seed) for seed in seeds]
    best_fitness = torch.full((problems,), math.inf, device=incumbent.device, dtype=torch.float64)
    curve = []
    shape = tuple(incumbent.shape[1:])
    for generation in range(generations):
        noise = torch.stack([torch.randn((offspring, *shape), generator=g, dtype=dtype) for g in generators])
        noise = noise.to(incumbent.device)
        mutants = incumbent[:, None] + sigma.view(problems, 1, *[1] * len(shape)) * noise
        if project is not None:
            mutants = project(mutants.flatten(0, 1)).view(problems, offspring, *shape)
        candidates = torch.cat([incumbent[:, None], mutants], dim=1)
        fitness = fitness_fn(candidates).detach().to(incumbent.device, torch.float64)
        fitness = torch.where(torch.isfinite(fitness), fitness, torch.full_like(fitness, math.inf))
        winner = fitness.argmin(dim=1)
        improved = winner > 0
        incumbent = candidates[torch.arange(problems), winner]
        best_fitness = fitness[torch.arange(problems), winner]
        sigma = torch.where(improved, sigma * 1.5, sigma * 0.85)
        point = {"generation": generation, "best": best_fitness.tolist(), "sigma": sigma.tolist(),
                 "improved": improved.tolist(), "evaluations": (generation + 1) * (offspring + 1)}
        curve.append(point)
        if on_generation is not None:
            on_generation(point)
    return BatchedResult(incumbent, best_fitness, curve)
