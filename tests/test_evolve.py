"""Tests for the gradient-free optimisers (core.cma, core.genetic) and their trust region (core.evolve);
slerp, robust fitness and the elitist ES: test_evolve_parts.py.

Synthetic problems stand in for the renderer: a shifted sphere, and a "path" of unit
rows scored by the mean angle to a target direction per row (what baking does to
guides). Everything is seeded, small and CPU-only.
"""

import math

import pytest
import torch

from core.cma import cma_es, default_cma_popsize
from core.evolve import EvolveResult, trust_region
from core.genetic import genetic
from evolve_helpers import DIM, STAGES, angles, one_torch_thread, unit_rows  # noqa: F401 (an autouse fixture)


@pytest.fixture
def direction_problem():
    """Start path, target path, and fitness = mean angle of each row to its target row."""
    start = unit_rows(STAGES, DIM, seed=1234)
    target = unit_rows(STAGES, DIM, seed=4321)

    def fitness(population: torch.Tensor) -> torch.Tensor:
        return angles(population, target).mean(dim=-1).float()

    return start, target, fitness


def shifted_sphere(dim: int, seed: int):
    shift = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
    return shift, lambda population: ((population - shift) ** 2).sum(dim=1)


# Settings that solve the direction problem; per-element strengths sized to the
# rows' element scale 1/sqrt(32) = 0.18.
def run_cma(fitness, x0, seed=0, generations=150, **kwargs) -> EvolveResult:
    return cma_es(fitness, x0, sigma0=0.2, generations=generations, seed=seed, **kwargs)


def run_ga(fitness, x0, seed=0, generations=300, **kwargs) -> EvolveResult:
    settings = dict(popsize=64, mutation_rate=0.3, mutation_strength=0.1, init_std=0.3)
    return genetic(fitness, x0, generations=generations, seed=seed, **(settings | kwargs))


OPTIMISERS = {"cma": run_cma, "ga": run_ga}


# ---------------------------------------------------------------------------
# The optimisers optimise


@pytest.mark.parametrize("name", OPTIMISERS)
def test_optimisers_turn_rows_towards_their_targets(name, direction_problem):
    start, _, fitness = direction_problem
    initial = float(fitness(start[None])[0])
    assert initial > 1.3  # random directions in 32-D: about pi/2 apart

    result = OPTIMISERS[name](fitness, start)

    assert result.best.shape == start.shape
    assert result.best_fitness < 0.2 * initial
    assert float(fitness(result.best[None])[0]) == pytest.approx(result.best_fitness, rel=1e-6)


def test_cma_es_minimises_a_shifted_sphere_in_400_dims():
    shift, fitness = shifted_sphere(400, seed=99)
    initial = float((shift**2).sum())

    result = cma_es(fitness, torch.zeros(400), sigma0=0.3, generations=200, seed=0)

    assert result.best_fitness < 0.2 * initial
    assert result.curve[0]["evaluations"] == default_cma_popsize(400)


def test_genetic_with_arithmetic_crossover_minimises_a_shifted_sphere():
    shift, fitness = shifted_sphere(200, seed=99)
    initial = float((shift**2).sum())

    result = genetic(
        fitness, torch.zeros(200), generations=200, popsize=64, seed=0,
        mutation_rate=0.1, mutation_strength=0.3, init_std=1.0, slerp_fraction=0.0,
    )

    assert result.best_fitness < 0.2 * initial


# ---------------------------------------------------------------------------
# Reproducibility, batching, curve


@pytest.mark.parametrize("name", OPTIMISERS)
def test_same_seed_same_result_and_different_seed_different(name, direction_problem):
    start, _, fitness = direction_problem
    run = OPTIMISERS[name]

    first, again, other = (run(fitness, start, seed=s, generations=20) for s in (7, 7, 8))

    assert torch.equal(first.best, again.best)
    assert first.curve == again.curve
    assert not torch.equal(first.best, other.best)
    assert first.best_fitness != other.best_fitness


@pytest.mark.parametrize("name", OPTIMISERS)
def test_fitness_is_called_once_per_generation_with_the_whole_population(name, direction_problem):
    start, _, fitness = direction_problem
    batch_shapes = []

    def counting_fitness(population):
        batch_shapes.append(tuple(population.shape))
        return fitness(population)

    popsize = 64 if name == "ga" else default_cma_popsize(start.numel())
    OPTIMISERS[name](counting_fitness, start, generations=12)

    assert batch_shapes == [(popsize, STAGES, DIM)] * 12


def test_default_cma_popsize_is_4_plus_3_ln_n():
    assert default_cma_popsize(256) == 4 + 16  # 3 ln 256 = 16.6
    assert default_cma_popsize(5120) == 4 + 25  # 3 ln 5120 = 25.7


@pytest.mark.parametrize("name", OPTIMISERS)
def test_curve_has_one_record_per_generation_and_best_never_increases(name, direction_problem):
    start, _, fitness = direction_problem

    result = OPTIMISERS[name](fitness, start, generations=30)

    curve = result.curve
    popsize = curve[0]["evaluations"]
    assert [r["generation"] for r in curve] == list(range(30))
    assert [r["evaluations"] for r in curve] == [popsize * (g + 1) for g in range(30)]
    bests = [r["best"] for r in curve]
    assert all(later <= earlier for earlier, later in zip(bests, bests[1:]))
    assert bests[-1] < bests[0]
    assert bests[-1] == result.best_fitness
    assert all(r["best"] <= r["generation_best"] <= r["mean"] for r in curve)
    assert all(r["std"] > 0 for r in curve)
    assert ("sigma" in curve[0]) == (name == "cma")


def test_cma_curve_records_the_sampling_step_size(direction_problem):
    start, _, fitness = direction_problem

    result = run_cma(fitness, start, generations=5)

    assert result.curve[0]["sigma"] == 0.2
    assert all(r["sigma"] > 0 for r in result.curve)
    assert len({r["sigma"] for r in result.curve}) == 5  # adapted every generation


@pytest.mark.parametrize("name", OPTIMISERS)
def test_on_generation_sees_each_record_and_can_stop_the_run(name, direction_problem):
    start, _, fitness = direction_problem
    seen = []

    def on_generation(record, best):
        seen.append((record["generation"], best.shape))
        return record["generation"] == 3

    result = OPTIMISERS[name](fitness, start, generations=50, on_generation=on_generation)

    assert seen == [(g, start.shape) for g in range(4)]
    assert len(result.curve) == 4


def test_genetic_starts_from_x0_itself_and_from_given_members(direction_problem):
    start, target, fitness = direction_problem
    batches = []

    def recording_fitness(population):
        batches.append(population.clone())
        return fitness(population)

    genetic(recording_fitness, start, generations=1, popsize=8, seed=0)
    assert torch.equal(batches[0][0], start)
    assert not torch.equal(batches[0][1], start)

    batches.clear()
    given = torch.stack([target, -target])
    genetic(recording_fitness, start, generations=1, popsize=8, seed=0, initial_population=given)
    assert torch.equal(batches[0][:2], given)


def test_genetic_keeps_the_elite_unchanged(direction_problem):
    start, _, fitness = direction_problem
    batches = []

    def recording_fitness(population):
        batches.append(population.clone())
        return fitness(population)

    genetic(recording_fitness, start, generations=2, popsize=16, seed=0, elitism=2)

    scores = fitness(batches[0])
    elites = batches[0][torch.argsort(scores)[:2]]
    assert torch.equal(batches[1][:2], elites)


@pytest.mark.parametrize("name", OPTIMISERS)
def test_nan_fitness_is_never_chosen(name, direction_problem):
    start, _, fitness = direction_problem

    def half_broken(population):
        scores = fitness(population)
        scores[::2] = float("nan")
        return scores

    result = OPTIMISERS[name](half_broken, start, generations=5)

    assert math.isfinite(result.best_fitness)
    assert all(math.isfinite(r["mean"]) for r in result.curve)


@pytest.mark.parametrize("name", OPTIMISERS)
def test_fitness_of_the_wrong_shape_is_an_error(name, direction_problem):
    start, _, fitness = direction_problem

    with pytest.raises(ValueError, match="shape"):
        OPTIMISERS[name](lambda population: fitness(population)[:, None], start, generations=2)


@pytest.mark.parametrize("name", OPTIMISERS)
def test_result_keeps_the_dtype_of_x0(name, direction_problem):
    start, _, fitness = direction_problem

    result = OPTIMISERS[name](fitness, start.double(), generations=2)

    assert result.best.dtype == torch.float64


# ---------------------------------------------------------------------------
# Trust region (the "size limiter")


def test_trust_region_keeps_every_row_within_the_angle_and_its_norm():
    center = unit_rows(DIM, seed=5)
    rows = torch.randn(200, DIM, generator=torch.Generator().manual_seed(6)) * 3
    rows[:50] = center + 0.01 * rows[:50]  # some rows start inside the cone
    max_angle = 0.4

    projected = trust_region(center, max_angle)(rows)

    before, after = angles(rows, center.expand_as(rows)), angles(projected, center.expand_as(rows))
    inside, outside = before <= max_angle, before > max_angle
    assert inside.sum() >= 40 and outside.sum() >= 140
    assert torch.equal(projected[inside], rows[inside])  # untouched, bit for bit
    assert torch.allclose(after[outside], torch.full_like(after[outside], max_angle), atol=1e-5)
    assert torch.allclose(projected.norm(dim=-1), rows.norm(dim=-1), rtol=1e-5)


def test_trust_region_rotates_within_the_plane_of_center_and_row():
    center = unit_rows(DIM, seed=5)
    row = unit_rows(DIM, seed=7) * 2.0

    projected = trust_region(center, 0.3)(row)

    # The projected row is a combination of center and row: nothing left outside their span.
    basis = torch.linalg.qr(torch.stack([center, row], dim=1).double()).Q
    residual = projected.double() - basis @ (basis.T @ projected.double())
    assert residual.norm() < 1e-5
    # ... and it lies between them: rotated away from the center by exactly max_angle.
    assert float(angles(projected, center)) == pytest.approx(0.3, abs=1e-5)
    turned_by = float(angles(row, center)) - 0.3
    assert float(angles(projected, row)) == pytest.approx(turned_by, abs=1e-5)


def test_trust_region_handles_antiparallel_and_zero_rows_and_per_stage_centers():
    centers = unit_rows(3, DIM, seed=8)  # one centre per stage
    rows = torch.stack([-2 * centers[0], torch.zeros(DIM), centers[2]])

    projected = trust_region(centers, 0.5)(rows[None])[0]

    assert torch.isfinite(projected).all()
    assert float(angles(projected[0], centers[0])) == pytest.approx(0.5, abs=1e-5)
    assert float(projected[0].norm()) == pytest.approx(2.0, rel=1e-5)
    assert torch.equal(projected[1], rows[1])
    assert torch.equal(projected[2], rows[2])


def test_trust_region_rejects_an_impossible_angle():
    with pytest.raises(ValueError, match="max_angle"):
        trust_region(torch.ones(4), -0.1)
    with pytest.raises(ValueError, match="max_angle"):
        trust_region(torch.ones(4), 4.0)


@pytest.mark.parametrize("name", OPTIMISERS)
def test_optimisers_only_ever_score_candidates_inside_the_trust_region(name, direction_problem):
    start, target, fitness = direction_problem
    max_angle = 0.5
    worst_seen = []

    def checked_fitness(population):
        worst_seen.append(float(angles(population, start.expand_as(population)).max()))
        return fitness(population)

    result = OPTIMISERS[name](
        checked_fitness, start, project=trust_region(start, max_angle)
    )

    assert max(worst_seen) <= max_angle + 1e-5
    assert float(angles(result.best, start).max()) <= max_angle + 1e-5
    # The best allowed path turns each row max_angle towards its target.
    allowed_best = float((angles(start, target) - max_angle).clamp_min(0).mean())
    initial = float(fitness(start[None])[0])
    assert result.best_fitness - allowed_best < 0.15 * (initial - allowed_best)
