"""A genetic algorithm over a population of tensors (`genetic`): tournament selection, elitism,
slerp or arithmetic crossover and gaussian mutation; the whole population is scored in one call.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from core.evolve import (EvolveResult, FitnessFn, OnGeneration, Projection, evaluate_population,
                         generation_record, keep_best, seeded_generator, slerp, working_dtype)


def _tournament(fitness: Tensor, count: int, size: int, gen: torch.Generator) -> Tensor:
    """Indices of ``count`` winners, each the fittest of ``size`` draws with replacement."""
    entrants = torch.randint(fitness.shape[0], (count, size), generator=gen, device=fitness.device)
    return entrants.gather(1, fitness[entrants].argmin(dim=1, keepdim=True)).squeeze(1)


def genetic(
    fitness_fn: FitnessFn,
    x0: Tensor,
    generations: int,
    popsize: int = 32,
    seed: int = 0,
    elitism: int = 1,
    tournament_size: int = 3,
    crossover_rate: float = 0.9,
    mutation_rate: float = 0.05,
    mutation_strength: float = 0.02,
    slerp_fraction: float = 1.0,
    init_std: float = 0.02,
    initial_population: Tensor | None = None,
    project: Projection | None = None,
    on_generation: OnGeneration | None = None,
) -> EvolveResult:
    """Minimise ``fitness_fn`` with a genetic algorithm over embeddings, starting around ``x0``.

    Each generation is one ``fitness_fn`` call on all ``popsize`` members
    ``[popsize, *x0.shape]``. Then the ``elitism`` best are copied unchanged and the
    rest are bred: two parents by tournament selection (``tournament_size`` draws),
    with probability ``crossover_rate`` a crossover, else a copy of the first parent,
    then gaussian mutation. Elites are scored again with everyone else, which keeps the
    batch size fixed and, for noisy fitness, keeps one lucky score from making an elite
    permanent.

    Crossover works per row (the last dim: one guide per stage) with a blend weight
    ``t ~ U(0, 1)`` per row: a fraction ``slerp_fraction`` of rows are blended
    spherically (``slerp``, right for directions: it keeps them off the origin), the
    rest arithmetically, ``(1-t)·a + t·b``.
    Mutation adds ``N(0, mutation_strength²)`` to each element with probability
    ``mutation_rate``. Strengths are absolute: a unit-norm row of dim D has elements of
    size about 1/sqrt(D) (0.044 for D=512).

    The initial population is ``initial_population`` (up to ``popsize`` rows, e.g.
    other prompts' paths), filled up with ``x0 + N(0, init_std²)``; when it is not
    given, member 0 is ``x0`` itself, so with a deterministic fitness and elitism the
    result is never worse than ``x0``. ``project`` is applied to every member before it
    is scored. ``on_generation``: ``(record, best) -> stop?`` after each generation.
    """
    if generations < 1:
        raise ValueError(f"generations must be >= 1, got {generations}")
    if not 0 <= elitism < popsize:
        raise ValueError(f"need 0 <= elitism < popsize, got elitism={elitism}, popsize={popsize}")
    if tournament_size < 1:
        raise ValueError(f"tournament_size must be >= 1, got {tournament_size}")
    shape, device, dtype = x0.shape, x0.device, working_dtype(x0)
    gen = seeded_generator(device, seed)
    out_dtype, x0 = x0.dtype, x0.detach().to(dtype)

    noise = init_std * torch.randn(popsize, *shape, generator=gen, device=device, dtype=dtype)
    population = x0 + noise
    if initial_population is None:
        population[0] = x0
    else:
        given = initial_population.detach().to(device=device, dtype=dtype)
        if given.shape[1:] != shape or given.shape[0] > popsize:
            raise ValueError(
                f"initial_population must be [<= {popsize}, {', '.join(map(str, shape))}],"
                f" got {list(given.shape)}"
            )
        population[: given.shape[0]] = given
    if project is not None:
        population = project(population)

    children_count = popsize - elitism
    row_shape = (children_count, *shape[:-1], 1)  # one draw per row (guide)
    member_shape = (children_count,) + (1,) * len(shape)  # one draw per child

    best, best_fitness, curve, evaluations = x0.clone(), math.inf, [], 0
    for generation in range(generations):
        fitness = evaluate_population(fitness_fn, population)
        evaluations += popsize
        order = torch.argsort(fitness, stable=True)
        best, best_fitness = keep_best(population, fitness, order, best, best_fitness)
        record = generation_record(generation, fitness, best_fitness, evaluations)
        curve.append(record)
        if on_generation is not None and on_generation(record, best):
            break
        if generation == generations - 1:
            break  # the last population is scored; breeding another would be wasted

        first = population[_tournament(fitness, children_count, tournament_size, gen)]
        second = population[_tournament(fitness, children_count, tournament_size, gen)]
        t = torch.rand(row_shape, generator=gen, device=device, dtype=dtype)
        spherical = torch.rand(row_shape, generator=gen, device=device) < slerp_fraction
        crossed = torch.where(spherical, slerp(first, second, t), (1 - t) * first + t * second)
        do_cross = torch.rand(member_shape, generator=gen, device=device) < crossover_rate
        children = torch.where(do_cross, crossed, first)

        mutate = torch.rand(children.shape, generator=gen, device=device) < mutation_rate
        kicks = torch.randn(children.shape, generator=gen, device=device, dtype=dtype)
        children = children + mutate * (mutation_strength * kicks)
        if project is not None:
            children = project(children)
        population = torch.cat([population[order[:elitism]], children])

    return EvolveResult(best=best.to(out_dtype), best_fitness=best_fitness, curve=curve)
