"""What the gradient-free optimisers share: their result, the geometry of guide paths, robust fitness and
the bookkeeping of a generation. The optimisers: separable CMA-ES (``core.cma``), a genetic algorithm
(``core.genetic``) and an elitist (1+lambda)-ES over a batch of problems at once (``core.elitist_es``,
whose fitness is ``[P, N]``).

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


def evaluate_population(fitness_fn: FitnessFn, population: Tensor) -> Tensor:
    """One batched fitness call; non-finite scores become +inf so they are never chosen."""
    fitness = fitness_fn(population)
    if not isinstance(fitness, Tensor) or fitness.shape != (population.shape[0],):
        shape = tuple(fitness.shape) if isinstance(fitness, Tensor) else type(fitness).__name__
        raise ValueError(
            f"fitness_fn must return a tensor of shape [{population.shape[0]}], got {shape}"
        )
    fitness = fitness.detach().to(device=population.device, dtype=torch.float64)
    return torch.where(torch.isfinite(fitness), fitness, torch.full_like(fitness, math.inf))


def keep_best(members: Tensor, fitness: Tensor, order: Tensor, best: Tensor, best_fitness: float):
    """The best member seen so far: this generation's first in `order` if it beats `best_fitness`."""
    if float(fitness[order[0]]) < best_fitness:
        return members[order[0]].clone(), float(fitness[order[0]])
    return best, best_fitness


def generation_record(generation: int, fitness: Tensor, best_fitness: float, evaluations: int) -> dict:
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


def working_dtype(x0: Tensor) -> torch.dtype:
    if not x0.is_floating_point():
        raise ValueError(f"x0 must be a float tensor, got {x0.dtype}")
    return torch.promote_types(x0.dtype, torch.float32)


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))
