"""Helpers shared by the optimiser tests (test_evolve, test_evolve_parts): unit rows, a float64 angle, and
one torch thread."""

import pytest
import torch
import torch.nn.functional as F

STAGES, DIM = 8, 32


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tensors are tiny: on a shared 2-core machine, a second intra-op thread only
    adds contention (measured: 0.3 s on one thread, 2-12 s on two under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def unit_rows(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def angles(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Angle between rows (last dim), in float64: a yardstick sharper than the code under test."""
    x, y = F.normalize(x.double(), dim=-1), F.normalize(y.double(), dim=-1)
    return 2 * torch.atan2((x - y).norm(dim=-1), (x + y).norm(dim=-1))
