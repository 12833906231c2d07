"""Hostile input that needs a process of its own (issue 16): the peak memory of refused inputs, Ctrl-C while a
script starts, and a worker killed under --gpus."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_hostile import BAKE, IMAGE, png_header

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PEAK_LIMIT_MB = 2048


def start(script: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=cwd, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


# A process started by fork inherits its parent's peak memory (the kernel keeps the copied memory's high-water
# mark across exec), so a script started straight from pytest, grown to gigabytes by then, would report
# pytest's peak. A small launcher starts it instead and writes its child's own peak (KB) to a file.
LAUNCHER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
            "sys.exit(code)")


def run_with_peak(script: str, args: list[str], cwd: Path, timeout: float) -> tuple[int, str, float]:
    """Exit status, stderr and peak resident memory (MB) of a script that prints little."""
    peak_file = cwd / "peak.txt"
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(peak_file), sys.executable, str(REPO / script),
                                *args], cwd=cwd, env=ENV, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"still running after {timeout} s")
    return process.returncode, err, int(peak_file.read_text()) / 1024


REFUSED = [
    ("upscale 100000", "normal.py", ["a red circle", *IMAGE, "--upscale", "100000"]),
    ("size x upscale", "normal.py", ["a red circle", *IMAGE, "--size", "4096", "--upscale", "1000"]),
    ("size 1e6", "normal.py", ["a red circle", *IMAGE, "--size", "1000000"]),
    ("alias bomb", "normal.py", ["a red circle", *IMAGE, "--recipe", "{tmp}/bomb.yaml"]),
    ("20000 x 20000 target", "bake.py", ["{tmp}/huge.png", *BAKE]),
    ("population 1e9", "bake.py", ["a red circle", *BAKE, "--meta", "cma", "--population", "1000000000"]),
]


def test_refused_inputs_stay_small_and_fast(tmp_path):
    chain = ["&a [x, x, x, x, x, x, x, x, x]"] + [
        f"&{name} [{', '.join([f'*{before}'] * 9)}]" for before, name in zip("abcdefgh", "bcdefghi")]
    (tmp_path / "bomb.yaml").write_text("size: [" + ", ".join(chain) + "]\n")
    (tmp_path / "huge.png").write_bytes(png_header(20000, 20000))
    for case, script, args in REFUSED:
        began = time.monotonic()
        code, err, peak = run_with_peak(script, [arg.replace("{tmp}", str(tmp_path)) for arg in args], tmp_path, 120)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, (case, code, err[-1000:])
        assert peak < PEAK_LIMIT_MB and time.monotonic() - began < 60, (case, peak)


@pytest.mark.parametrize("delay", [0.3, 2.0])
def test_ctrl_c_while_starting_is_one_line_and_130(tmp_path, delay):
    process = start("batch_bake.py", "a red circle", *BAKE, cwd=tmp_path)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal does: the whole foreground process group
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip() == "interrupted", (process.returncode, err[-2000:])
    assert not list((tmp_path / "store").glob("*.pt")) if (tmp_path / "store").exists() else True


def test_a_killed_worker_is_reported_and_the_run_fails(tmp_path):
    prompts = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
    process = start("batch_bake.py", *prompts, *BAKE, "--meta-steps", "60", "--gpus", "cpu:2", "--batch-size", "1",
                    cwd=tmp_path)
    victim = _kill_a_claimer(process, tmp_path / "store", time.monotonic() + 240)
    assert victim is not None, f"no worker ever claimed a prompt: {process.communicate()}"
    out, err = process.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 1, (process.returncode, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: worker "), err[-2000:]
    assert f"pid {victim}) died with exit code -9 (SIGKILL)" in lines[0]
    # the live worker took over the dead one's prompt: everything is baked once
    assert len(list((tmp_path / "store").glob("*.pt"))) == len(prompts), out[-3000:]


def _kill_a_claimer(process: subprocess.Popen, store: Path, deadline: float) -> int | None:
    """Kill (SIGKILL) the first process other than `process` that holds a claim in `store`; its pid."""
    while time.monotonic() < deadline and process.poll() is None:
        for claim in (store / ".claims").glob("*.claim"):
            try:
                pid = json.loads(claim.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if pid != process.pid:
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.1)
    return None


def test_a_killed_ray_task_is_reported_and_the_run_fails(tmp_path):
    """A Ray task whose worker is killed: one line names it, exit status 1, the next task bakes its prompt."""
    pytest.importorskip("ray")
    prompts = ["a red circle", "a blue square", "a green triangle"]
    process = start("batch_bake.py", *prompts, *BAKE, "--meta-steps", "60", "--ray", "local", "--batch-size", "1",
                    cwd=tmp_path)
    victim = _kill_a_claimer(process, tmp_path / "store", time.monotonic() + 240)
    out, err = process.communicate(timeout=300)
    if victim is None and "task slots" not in out:
        pytest.skip(f"Ray cannot start on this machine: {err.strip().splitlines()[-1:]}")
    assert victim is not None, (out[-2000:], err[-2000:])
    lines = [line for line in err.splitlines() if line.strip() and line.startswith("error:")]
    assert process.returncode == 1, (process.returncode, err[-2000:])
    assert len(lines) == 1 and "a Ray task died" in lines[0], err[-2000:]
    assert len(list((tmp_path / "store").glob("*.pt"))) == len(prompts), out[-3000:]
