"""Tests for the optimisers' parts: slerp (core.evolve), robust fitness over several starts, and the elitist ES
(core.elitist_es)."""

import math

import pytest
import torch

from core.elitist_es import elitist_es
from core.evolve import robust_fitness, slerp
from evolve_helpers import DIM, angles, one_torch_thread, unit_rows  # noqa: F401 (an autouse fixture)


# ---------------------------------------------------------------------------
# slerp


def test_slerp_endpoints_are_exact():
    a = torch.randn(5, DIM, generator=torch.Generator().manual_seed(10))
    b = torch.randn(5, DIM, generator=torch.Generator().manual_seed(11)) * 3

    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)
    t = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0])[:, None]
    assert torch.equal(slerp(a, b, t), torch.where(t == 0, a, b))


def test_slerp_midpoint_of_orthogonal_unit_vectors():
    a, b = torch.eye(DIM)[0], torch.eye(DIM)[1]

    middle = slerp(a, b, 0.5)

    assert float(middle.norm()) == pytest.approx(1.0, abs=1e-6)
    assert float(angles(middle, a)) == pytest.approx(math.pi / 4, abs=1e-6)
    assert float(angles(middle, b)) == pytest.approx(math.pi / 4, abs=1e-6)
    assert torch.allclose(middle, (a + b) / math.sqrt(2), atol=1e-6)


def test_slerp_moves_at_constant_angular_speed_and_interpolates_the_norm():
    a = unit_rows(DIM, seed=12)
    b = unit_rows(DIM, seed=13) * 3.0
    total = float(angles(a, b))

    for t in (0.1, 0.25, 0.7):
        point = slerp(a, b, t)
        assert float(angles(a, point)) == pytest.approx(t * total, abs=1e-5)
        assert float(point.norm()) == pytest.approx(1 + 2 * t, rel=1e-5)


def test_slerp_is_safe_for_parallel_and_antiparallel_rows():
    a = unit_rows(DIM, seed=14)

    parallel = slerp(a, 2 * a, 0.5)
    assert torch.allclose(parallel, 1.5 * a, atol=1e-6)

    for t in (0.25, 0.5, 0.75):
        turned = slerp(a, -a, t)
        assert torch.isfinite(turned).all()
        assert float(turned.norm()) == pytest.approx(1.0, abs=1e-5)
        assert float(angles(a, turned)) == pytest.approx(t * math.pi, abs=1e-4)
    assert torch.equal(slerp(a, -a, 0.0), a)
    assert torch.equal(slerp(a, -a, 1.0), -a)


# ---------------------------------------------------------------------------
# robust_fitness


def test_robust_fitness_is_mean_plus_population_std_over_starts():
    losses = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]])

    assert torch.equal(robust_fitness(losses), torch.tensor([3.0, 2.0, 4.0]))
    assert torch.equal(robust_fitness(losses, std_weight=0.5), torch.tensor([2.5, 2.0, 3.0]))
    # One start: just the loss, no NaN from an undefined sample std.
    assert torch.equal(robust_fitness(torch.tensor([[1.5], [0.5]])), torch.tensor([1.5, 0.5]))


def test_robust_fitness_prefers_the_reliable_candidate():
    lucky = [0.1, 0.9, 0.1, 0.9]  # best single start, mean 0.5, std 0.4
    steady = [0.55, 0.55, 0.55, 0.55]  # mean 0.55, std 0

    scores = robust_fitness(torch.tensor([lucky, steady]))

    assert scores.argmin() == 1


def test_robust_fitness_wants_candidates_by_starts():
    with pytest.raises(ValueError, match="candidates, starts"):
        robust_fitness(torch.ones(4))


def test_elitist_es_solves_each_problem_of_a_batch():
    targets = torch.tensor([[1.0, -2.0, 0.5], [-3.0, 0.0, 2.0]])

    def fitness(candidates):  # [P, N, 3] -> [P, N]
        return ((candidates - targets[:, None]) ** 2).sum(dim=-1)

    result = elitist_es(fitness, torch.zeros(2, 3), 1.0, generations=150, offspring=6, seeds=[1, 2])
    assert torch.allclose(result.best, targets, atol=0.05)
    best_curve = [point["best"] for point in result.curve]
    for problem in range(2):  # the incumbent's score never rises on a noise-free fitness
        scores = [point[problem] for point in best_curve]
        assert all(later <= earlier + 1e-12 for earlier, later in zip(scores, scores[1:]))


def test_elitist_es_problem_does_not_depend_on_the_batch():
    def fitness(candidates):
        return (candidates ** 2).sum(dim=-1)

    together = elitist_es(fitness, torch.ones(2, 4), 0.5, generations=5, offspring=3, seeds=[7, 8])
    alone = elitist_es(fitness, torch.ones(1, 4), 0.5, generations=5, offspring=3, seeds=[8])
    assert torch.equal(together.best[1], alone.best[0])


def test_elitist_es_keeps_incumbent_scored_on_fresh_draws():
    """The incumbent is re-scored every generation, so one lucky score cannot keep it forever."""
    calls = []

    def fitness(candidates):
        calls.append(candidates.shape)
        return candidates.sum(dim=-1)

    elitist_es(fitness, torch.zeros(3, 2), 0.1, generations=2, offspring=4, seeds=[0, 1, 2])
    assert calls == [torch.Size([3, 5, 2])] * 2  # incumbent + 4 mutants for each of 3 problems
