"""Separable CMA-ES over a population of tensors (`cma_es`): the step size and a diagonal covariance
adapt to the fitness landscape; the whole population is scored in one call.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from core.evolve import (EvolveResult, FitnessFn, OnGeneration, Projection, evaluate_population,
                         generation_record, keep_best, seeded_generator, working_dtype)


def default_cma_popsize(dimension: int) -> int:
    """Hansen's default population size, 4 + floor(3 ln n)."""
    return 4 + int(3 * math.log(dimension))


def cma_es(
    fitness_fn: FitnessFn,
    x0: Tensor,
    sigma0: float,
    generations: int,
    popsize: int | None = None,
    seed: int = 0,
    project: Projection | None = None,
    on_generation: OnGeneration | None = None,
) -> EvolveResult:
    """Minimise ``fitness_fn`` with separable (diagonal) CMA-ES, starting from ``x0``.

    sep-CMA-ES (Ros & Hansen 2008): candidates ``m + sigma * sqrt(C) * z`` with a
    diagonal covariance C, weighted recombination of the best half, cumulative
    step-size adaptation and rank-one + rank-mu updates of C with the learning rates
    scaled up by (n+2)/3 as the diagonal model allows. Full covariance would need an
    n×n matrix and its eigendecomposition, impractical for paths of 5120+ numbers.

    x0: the start, any shape; the search runs on its flattened view.
    sigma0: initial step size, in x0's units (per element).
    generations: number of generations, each one ``fitness_fn`` call on ``popsize``
        candidates ``[popsize, *x0.shape]``.
    popsize: lambda, default ``4 + floor(3 ln n)``.
    seed: seeds the sampling; same seed, same result.
    project: applied to every candidate before it is evaluated, and to the mean. The
        update uses the projected candidates (their steps recomputed from the mean),
        so the distribution learns from what was actually scored; with a convex
        feasible set the mean then stays feasible.
    on_generation: ``(record, best) -> stop?`` after each generation.
    """
    if generations < 1:
        raise ValueError(f"generations must be >= 1, got {generations}")
    if sigma0 <= 0:
        raise ValueError(f"sigma0 must be positive, got {sigma0}")
    shape, device, dtype = x0.shape, x0.device, working_dtype(x0)
    n = x0.numel()
    popsize = default_cma_popsize(n) if popsize is None else int(popsize)
    if popsize < 2:
        raise ValueError(f"popsize must be >= 2, got {popsize}")
    gen = seeded_generator(device, seed)

    def as_population(flat: Tensor) -> Tensor:
        return flat.reshape(flat.shape[0], *shape)

    # Strategy parameters (Hansen's tutorial defaults; sep-CMA scaling of c1, cmu).
    mu = popsize // 2
    weights = math.log(mu + 0.5) - torch.log(torch.arange(1, mu + 1, dtype=torch.float64))
    weights = weights / weights.sum()
    mueff = float(1.0 / (weights**2).sum())
    weights = weights.to(device=device, dtype=dtype)
    cs = (mueff + 2) / (n + mueff + 5)
    damps = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + cs
    cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
    sep_boost = (n + 2) / 3
    c1 = min(1.0, sep_boost * 2 / ((n + 1.3) ** 2 + mueff))
    cmu = min(1 - c1, sep_boost * 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
    chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))

    mean = x0.detach().reshape(-1).to(dtype)
    if project is not None:
        mean = project(mean.reshape(1, *shape)).reshape(-1)
    sigma = float(sigma0)
    diag_c = torch.ones(n, device=device, dtype=dtype)
    path_sigma = torch.zeros(n, device=device, dtype=dtype)
    path_c = torch.zeros(n, device=device, dtype=dtype)

    best, best_fitness, curve, evaluations = mean.clone(), math.inf, [], 0
    for generation in range(generations):
        std_c = diag_c.sqrt()
        z = torch.randn(popsize, n, generator=gen, device=device, dtype=dtype)
        steps = z * std_c
        candidates = mean + sigma * steps
        if project is not None:
            candidates = project(as_population(candidates)).reshape(popsize, n)
            # Learn from the candidates that were actually scored.
            steps = (candidates - mean) / sigma

        fitness = evaluate_population(fitness_fn, as_population(candidates))
        evaluations += popsize
        order = torch.argsort(fitness, stable=True)
        best, best_fitness = keep_best(candidates, fitness, order, best, best_fitness)
        record = generation_record(generation, fitness, best_fitness, evaluations)
        record["sigma"] = sigma
        curve.append(record)

        # Recombination of the mu best.
        selected_steps = steps[order[:mu]]
        new_mean = mean + sigma * (weights @ selected_steps)
        if project is not None:
            new_mean = project(new_mean.reshape(1, *shape)).reshape(-1)
        mean_step = (new_mean - mean) / sigma
        mean = new_mean

        # Cumulative step-size adaptation, on the isotropic (C^-1/2) view of the step.
        path_sigma = (1 - cs) * path_sigma + math.sqrt(cs * (2 - cs) * mueff) * (mean_step / std_c)
        path_sigma_norm = float(torch.linalg.vector_norm(path_sigma))
        # Stall the rank-one path while the step-size path is still too long
        # (just after a sigma jump), so C does not grow from it.
        h_sigma = float(
            path_sigma_norm / math.sqrt(1 - (1 - cs) ** (2 * (generation + 1)))
            < (1.4 + 2 / (n + 1)) * chi_n
        )
        path_c = (1 - cc) * path_c + h_sigma * math.sqrt(cc * (2 - cc) * mueff) * mean_step

        # Diagonal covariance: rank-one (evolution path) + rank-mu (selected steps).
        rank_mu = weights @ (selected_steps**2)
        diag_c = (
            (1 - c1 - cmu) * diag_c
            + c1 * (path_c**2 + (1 - h_sigma) * cc * (2 - cc) * diag_c)
            + cmu * rank_mu
        )
        sigma *= math.exp((cs / damps) * (path_sigma_norm / chi_n - 1))

        if on_generation is not None and on_generation(record, best.reshape(shape)):
            break

    best = best.reshape(shape).to(x0.dtype)
    return EvolveResult(best=best, best_fitness=best_fitness, curve=curve)
