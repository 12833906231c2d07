"""Gradient-free optimisers over a population of tensors: separable CMA-ES, a genetic algorithm, and an
elitist (1+lambda)-ES over a batch of problems at once (``elitist_es``, whose fitness is ``[P, N]``).

CMA-ES and the GA minimise ``fitness_fn``, which scores a whole population in one call
(``Tensor [N, *shape] -> Tensor [N]``, lower is better), so the caller can push the
population through the renderer as one batch. Everything is plain torch and runs on
the device and (float) dtype of ``x0``; randomness comes from one seeded
``torch.Generator``, so the same seed gives the same result.

Helpers for searching over guide paths (``[stages, dim]``, one direction per row):
``slerp`` (row-wise spherical interpolation), ``trust_region`` (the "size limiter":
keep each row within an angle of the original prompt) and ``robust_fitness``
(mean + std over several random starts, so a candidate is scored on how reliably it
works rather than on one lucky start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

FitnessFn = Callable[[Tensor], Tensor]
"""Scores a population ``[N, *shape]`` as ``[N]``; lower is better."""

Projection = Callable[[Tensor], Tensor]
"""Maps a population ``[N, *shape]`` onto the feasible set, same shape."""

OnGeneration = Callable[[dict, Tensor], Optional[bool]]
"""Called after each generation with its curve record and the best tensor so far;
returning True stops the run early."""

# Below this angle (radians) two rows count as parallel, within it of pi as antiparallel:
# sin(angle) is then too small to divide by without losing the result to rounding.
_PARALLEL_EPS = 1e-3


@dataclass
class EvolveResult:
    """What an optimiser found.

    best: the best candidate ever evaluated, shape of ``x0`` (already projected).
    best_fitness: its fitness.
    curve: one record per generation, for the bake log and the path's metrics:
        ``generation`` (0-based), ``best`` (best fitness so far, never increases),
        ``generation_best``, ``mean`` and ``std`` of this generation's fitness
        (over its finite values), ``evaluations`` (candidates scored so far) and,
        for CMA-ES, ``sigma`` (the step size this generation was sampled with).
    """

    best: Tensor
    best_fitness: float
    curve: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Geometry helpers


def _angle_between_unit(a_unit: Tensor, b_unit: Tensor) -> Tensor:
    """Angle in [0, pi] between unit vectors along the last dim, shape ``[...]``.

    2·atan2(|a-b|, |a+b|) is accurate at every angle, unlike acos of the dot product,
    which loses all precision near 0 and pi.
    """
    return 2.0 * torch.atan2(
        torch.linalg.vector_norm(a_unit - b_unit, dim=-1),
        torch.linalg.vector_norm(a_unit + b_unit, dim=-1),
    )


def _some_perpendicular(unit: Tensor) -> Tensor:
    """A deterministic unit vector perpendicular to each row of ``unit`` (last dim >= 2).

    Uses the coordinate axis along which the row is smallest, which is never close to
    the row itself, and removes the row's component from it.
    """
    axis = torch.zeros_like(unit)
    axis.scatter_(-1, unit.abs().argmin(dim=-1, keepdim=True), 1.0)
    perp = axis - (axis * unit).sum(-1, keepdim=True) * unit
    return perp / torch.linalg.vector_norm(perp, dim=-1, keepdim=True).clamp_min(1e-30)


def slerp(a: Tensor, b: Tensor, t: float | Tensor) -> Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1), row-wise on the last dim.

    The direction moves along the great circle between the rows' directions while the
    norm moves linearly from |a| to |b|, so guides of different lengths blend sensibly.
    ``t`` is a float or a tensor broadcastable to ``a.shape[:-1] + (1,)``.
    t=0 returns ``a`` and t=1 returns ``b`` bit for bit.

    Safe at the degenerate angles: nearly parallel rows are interpolated linearly
    (the great circle is then a straight line to within rounding), and for nearly
    antiparallel rows, where every great circle is a geodesic, a deterministic one is
    taken through a direction perpendicular to ``a``. Zero rows give no NaN.
    """
    a, b = torch.broadcast_tensors(a, b)
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    norm_a = torch.linalg.vector_norm(a, dim=-1, keepdim=True)
    norm_b = torch.linalg.vector_norm(b, dim=-1, keepdim=True)
    safe_a = norm_a.clamp_min(1e-30)
    safe_b = norm_b.clamp_min(1e-30)
    unit_a, unit_b = a / safe_a, b / safe_b
    angle = _angle_between_unit(unit_a, unit_b).unsqueeze(-1)
    radius = (1 - t) * norm_a + t * norm_b

    # General case, written as coefficients on a and b so that the endpoints are exact:
    # at t=0 the coefficient on a is (sin θ / sin θ)·(|a| / |a|) = 1 and on b sin 0 = 0.
    sin_angle = torch.sin(angle)
    general_ok = (angle > _PARALLEL_EPS) & (angle < math.pi - _PARALLEL_EPS)
    safe_sin = torch.where(general_ok, sin_angle, torch.ones_like(sin_angle))
    coef_a = (torch.sin((1 - t) * angle) / safe_sin) * (radius / safe_a)
    coef_b = (torch.sin(t * angle) / safe_sin) * (radius / safe_b)
    general = coef_a * a + coef_b * b

    # Nearly parallel: linear interpolation of the directions, same exact endpoints.
    parallel = ((1 - t) * (radius / safe_a)) * a + (t * (radius / safe_b)) * b

    # Nearly antiparallel: rotate a through a fixed perpendicular direction by t·θ.
    perp = _some_perpendicular(unit_a)
    antiparallel = radius * (torch.cos(t * angle) * unit_a + torch.sin(t * angle) * perp)
    antiparallel = torch.where(t == 0, a, torch.where(t == 1, b, antiparallel))

    out = torch.where(angle <= _PARALLEL_EPS, parallel, antiparallel)
    return torch.where(general_ok, general, out)


def trust_region(center: Tensor, max_angle: float) -> Projection:
    """The "size limiter" of CMA-ES over prompt embeddings: a projection keeping each row near ``center``.

    Returns ``project(x)`` for any ``x [..., D]``: a row whose angle to ``center`` is
    more than ``max_angle`` radians is rotated back onto the cone boundary, inside the
    plane spanned by ``center`` and the row, keeping the row's norm; rows already inside
    (and zero rows) come back bit for bit. ``center`` is ``[D]`` or anything
    broadcastable against the rows, e.g. ``[stages, D]`` for one centre per stage.

    For ``max_angle <= pi/2`` the allowed set is convex, so averages of feasible
    candidates (CMA's mean, arithmetic crossover) stay feasible.
    """
    if not 0.0 <= max_angle <= math.pi:
        raise ValueError(f"max_angle must be in [0, pi] radians, got {max_angle}")
    center = center.detach()
    center_unit = center / torch.linalg.vector_norm(center, dim=-1, keepdim=True).clamp_min(1e-30)

    def project(x: Tensor) -> Tensor:
        c = center_unit.to(device=x.device, dtype=x.dtype).expand_as(x)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        unit = x / norm.clamp_min(1e-30)
        angle = _angle_between_unit(unit, c).unsqueeze(-1)
        # The in-plane direction perpendicular to the centre, pointing towards the row;
        # for a row antiparallel to the centre there is no such plane, so any
        # perpendicular direction will do.
        toward = unit - (unit * c).sum(-1, keepdim=True) * c
        toward_norm = torch.linalg.vector_norm(toward, dim=-1, keepdim=True)
        toward = torch.where(
            toward_norm > 1e-6, toward / toward_norm.clamp_min(1e-30), _some_perpendicular(c)
        )
        on_boundary = norm * (math.cos(max_angle) * c + math.sin(max_angle) * toward)
        outside = (angle > max_angle) & (norm > 0)
        return torch.where(outside, on_boundary, x)

    return project


def robust_fitness(losses: Tensor, std_weight: float = 1.0) -> Tensor:
    """Score candidates on how reliably they work: ``mean + std_weight * std`` over starts.

    ``losses [N, R]`` holds each of N candidates' loss from R random starts (seeds,
    initial pixels); returns ``[N]``. The std is the population std (divide by R), so a
    single start (R=1) gives just the loss instead of NaN.
    """
    if losses.dim() != 2:
        raise ValueError(f"losses must be [candidates, starts], got shape {tuple(losses.shape)}")
    return losses.mean(dim=1) + std_weight * losses.std(dim=1, correction=0).abs()


# ---------------------------------------------------------------------------
# Shared bookkeeping


def _evaluate(fitness_fn: FitnessFn, population: Tensor) -> Tensor:
    """One batched fitness call; non-finite scores become +inf so they are never chosen."""
    fitness = fitness_fn(population)
    if not isinstance(fitness, Tensor) or fitness.shape != (population.shape[0],):
        shape = tuple(fitness.shape) if isinstance(fitness, Tensor) else type(fitness).__name__
        raise ValueError(
            f"fitness_fn must return a tensor of shape [{population.shape[0]}], got {shape}"
        )
    fitness = fitness.detach().to(device=population.device, dtype=torch.float64)
    return torch.where(torch.isfinite(fitness), fitness, torch.full_like(fitness, math.inf))


def _keep_best(members: Tensor, fitness: Tensor, order: Tensor, best: Tensor, best_fitness: float):
    """The best member seen so far: this generation's first in `order` if it beats `best_fitness`."""
    if float(fitness[order[0]]) < best_fitness:
        return members[order[0]].clone(), float(fitness[order[0]])
    return best, best_fitness


def _record(generation: int, fitness: Tensor, best_fitness: float, evaluations: int) -> dict:
    """The curve entry for one generation."""
    finite = fitness[torch.isfinite(fitness)]
    return {
        "generation": generation,
        "best": best_fitness,
        "generation_best": float(fitness.min()),
        "mean": float(finite.mean()) if finite.numel() else math.inf,
        "std": float(finite.std(correction=0)) if finite.numel() else 0.0,
        "evaluations": evaluations,
    }


def _working_dtype(x0: Tensor) -> torch.dtype:
    if not x0.is_floating_point():
        raise ValueError(f"x0 must be a float tensor, got {x0.dtype}")
    return torch.promote_types(x0.dtype, torch.float32)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


# ---------------------------------------------------------------------------
# Separable CMA-ES


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
    shape, device, dtype = x0.shape, x0.device, _working_dtype(x0)
    n = x0.numel()
    popsize = default_cma_popsize(n) if popsize is None else int(popsize)
    if popsize < 2:
        raise ValueError(f"popsize must be >= 2, got {popsize}")
    gen = _generator(device, seed)

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

        fitness = _evaluate(fitness_fn, as_population(candidates))
        evaluations += popsize
        order = torch.argsort(fitness, stable=True)
        best, best_fitness = _keep_best(candidates, fitness, order, best, best_fitness)
        record = _record(generation, fitness, best_fitness, evaluations)
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


# ---------------------------------------------------------------------------
# Genetic algorithm


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
    shape, device, dtype = x0.shape, x0.device, _working_dtype(x0)
    gen = _generator(device, seed)
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
        fitness = _evaluate(fitness_fn, population)
        evaluations += popsize
        order = torch.argsort(fitness, stable=True)
        best, best_fitness = _keep_best(population, fitness, order, best, best_fitness)
        record = _record(generation, fitness, best_fitness, evaluations)
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


# ---------------------------------------------------------------------------
# Elitist (1+lambda)-ES over many problems at once


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
    dtype = _working_dtype(x0)
    incumbent = x0.to(dtype).clone()
    problems = incumbent.shape[0]
    sigma = torch.full((problems,), float(sigma0), device=incumbent.device, dtype=dtype)
    generators = [_generator(torch.device("cpu"), seed) for seed in seeds]
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
