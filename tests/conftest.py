"""Shared fixtures: the tiny and shipped models, the repo root, running scripts like a user."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The 34 paths baked by the original tool (cuda:0 tensors with requires_grad), shipped so CI reads real ones.
LEGACY = REPO / "tests" / "data" / "legacy-baked"


def pytest_configure(config):
    # one thread: the test models are small, and a second thread fighting other processes for the
    # machine's cores makes them many times slower
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_clip():
    from core.models import load_clip

    return load_clip("tiny", "cpu")


def small_scenes_clip():
    """A random-init scenes CLIP of the critic's (smallest) architecture, as training builds it (seed 0)."""
    import torch

    from core.scenes_clip import ARCHS, build_scenes_clip
    from core.train_scenes_clip import TRAINING_CONTEXT

    torch.manual_seed(0)
    return build_scenes_clip({**ARCHS["scenes-critic"], "context_length": TRAINING_CONTEXT})


@pytest.fixture(scope="session")
def scenes_clip():
    from core.models import load_clip

    return load_clip("scenes", "cpu")


def run_script(script: str, *args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a top-level script as a user would, on CPU; returns the completed process (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
