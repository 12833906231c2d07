"""The claim queue, worker processes, Ray tasks and the batch size: every prompt baked once, at the limit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from core import baker, claims, processes, sizing
from core.bake_settings import BakeSettings
from core.errors import UserError
from core.jobs import BakeJob, RunOptions
from core.recipes import RecipeChoice
from core.render import RenderSettings
from conftest import REPO, run_script

SMALL = ["--model", "tiny", "--device", "cpu", "--size", "32", "--steps-per-stage", "2", "--stages", "2",
         "--meta-steps", "2", "--cutn", "2", "--eval-starts", "1", "--quiet"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the machine is shared: oversubscribed threads spin


def small_bake(store: Path, prompts: list[str], batch_size: int) -> BakeJob:
    """The job of a small bake of `prompts` into `store` (as SMALL would give on the command line)."""
    recipe = RecipeChoice(overrides={"size": 32, "steps_per_stage": 2, "stages": 2, "meta_steps": 2, "cutn": 2})
    run = RunOptions(model="tiny", device="cpu", store=str(store), quiet=True)
    return BakeJob(prompts, run=run, recipe=recipe, bake=BakeSettings(eval_starts=1), batch_size=batch_size)


def baked_lines(output: str) -> dict[str, int]:
    """How often each prompt was reported baked in a run's log."""
    counts: dict[str, int] = {}
    for line in output.splitlines():
        if "baked '" in line and "' -> " in line:
            prompt = line.split("baked '", 1)[1].split("' -> ", 1)[0]
            counts[prompt] = counts.get(prompt, 0) + 1
    return counts


# --- claims ------------------------------------------------------------------------------------------

def claim_at_once(store, label: str, workers: int, ttl: float) -> tuple[list, list]:
    """`workers` threads call `try_claim` at the same moment: the claims won and the errors raised."""
    barrier = threading.Barrier(workers)
    won, errors = [], []

    def claimer(index: int) -> None:
        barrier.wait()
        try:
            claim = claims.try_claim(store, label, f"worker-{index}", ttl=ttl)
        except Exception as error:  # noqa: BLE001 - any error is a failure of the protocol
            errors.append(error)
        else:
            if claim is not None:
                won.append(claim)

    threads = [threading.Thread(target=claimer, args=(index,)) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, errors


def test_two_claimers_one_wins(tmp_path):
    won, errors = claim_at_once(tmp_path, "a red circle", 8, ttl=60)
    assert len(won) == 1 and not errors
    on_disk = json.loads(claims.claim_file(tmp_path, "a red circle").read_text())
    assert on_disk["worker"] == won[0].worker and on_disk["token"] == won[0].token
    assert claims.try_claim(tmp_path, "a red circle", "late", ttl=60) is None


def test_expired_claim_is_taken_over(tmp_path):
    old = claims.try_claim(tmp_path, "a cat", "first", ttl=10)
    file = claims.claim_file(tmp_path, "a cat")
    os.utime(file, (time.time() - 11, time.time() - 11))  # no heartbeat for 11 s
    new = claims.try_claim(tmp_path, "a cat", "second", ttl=10)
    assert new is not None and new.worker == "second"
    assert not claims.still_holds(tmp_path, old) and claims.still_holds(tmp_path, new)
    assert not claims.refresh(tmp_path, old)  # the first worker's heartbeat finds its claim lost
    claims.release_claim(tmp_path, old)  # and releasing it leaves the new owner's claim alone
    assert json.loads(file.read_text())["worker"] == "second"
    assert sorted(p.name for p in file.parent.iterdir()) == [file.name]  # no stale leftovers


def test_many_takers_of_one_expired_claim_leave_one_live_claim(tmp_path):
    """Takers of an expired claim never move each other's fresh claim away (they take over one at a time)."""
    file = claims.claim_file(tmp_path, "a fox")
    for round_ in range(30):  # a race: several rounds give it chances to show
        assert claims.try_claim(tmp_path, "a fox", "dead", ttl=10) is not None
        os.utime(file, (time.time() - 11, time.time() - 11))
        won, errors = claim_at_once(tmp_path, "a fox", 6, ttl=10)
        assert not errors and len(won) <= 1, (round_, errors, won)
        if won:
            assert claims.still_holds(tmp_path, won[0]), round_
        assert sorted(p.name for p in file.parent.iterdir()) == [file.name], round_  # no lock or stale copy left
        file.unlink()


def test_a_dead_takers_lock_expires(tmp_path):
    claims.try_claim(tmp_path, "a hen", "dead", ttl=10)
    file = claims.claim_file(tmp_path, "a hen")
    os.utime(file, (time.time() - 11, time.time() - 11))
    lock = file.with_name(file.name + ".takeover")
    lock.touch()  # another taker is at work: wait for it
    assert claims.try_claim(tmp_path, "a hen", "next", ttl=10) is None and lock.exists()
    old = time.time() - claims.TAKEOVER_TTL - 1
    os.utime(lock, (old, old))  # ... that taker died mid-way: its lock is cleared, the next try succeeds
    assert claims.try_claim(tmp_path, "a hen", "next", ttl=10) is None and not lock.exists()
    assert claims.try_claim(tmp_path, "a hen", "next", ttl=10).worker == "next"


def test_heartbeat_survives_a_file_system_error(tmp_path, monkeypatch):
    lines = []
    with claims.ClaimQueue(tmp_path, "owner", ttl=60, log=lines.append) as queue:
        assert queue.claim("a bee")

        def broken(store, claim):
            raise OSError(116, "Stale file handle")

        monkeypatch.setattr(claims, "refresh", broken)
        queue.beat()
        assert "a bee" in queue.held and lines == ["warning: could not refresh the claim of 'a bee': "
                                                   "[Errno 116] Stale file handle"]
        monkeypatch.undo()
        queue.beat()
        assert queue.holds("a bee") and len(lines) == 1


def test_live_claim_is_kept_by_its_heartbeat_and_released(tmp_path):
    with claims.ClaimQueue(tmp_path, "owner", ttl=1.0) as queue:
        assert queue.claim("a dog")
        time.sleep(2.0)  # twice the TTL: only the heartbeat keeps it alive
        assert claims.try_claim(tmp_path, "a dog", "thief", ttl=1.0) is None
        assert queue.holds("a dog")
        queue.release("a dog")
        assert not claims.claim_file(tmp_path, "a dog").exists()
    taken = claims.try_claim(tmp_path, "a dog", "next", ttl=1.0)
    assert taken is not None and taken.worker == "next"


def test_claim_of_a_dead_process_expires_at_once(tmp_path):
    claim = claims.try_claim(tmp_path, "a tree", "dead", ttl=3600)
    # a process id no process has now (found without starting one: subprocess tests are slow)
    dead_pid = next(pid for pid in range(2**15 - 1, 300, -1) if not Path(f"/proc/{pid}").exists())
    file = claims.claim_file(tmp_path, "a tree")
    file.write_text(json.dumps({**json.loads(file.read_text()), "pid": dead_pid}))
    assert claims.is_expired(claims.read_claim(file), ttl=3600)
    assert claims.try_claim(tmp_path, "a tree", "alive", ttl=3600) is not None
    assert not claims.still_holds(tmp_path, claim)


def test_queue_spreads_batches_and_drops_baked(tmp_path):
    items = ["a", "b", "c", "d"]
    with claims.ClaimQueue(tmp_path, "w", ttl=60, workers=2) as queue:
        queue.is_baked = lambda label: label == "c"  # as if another worker had baked 'c'
        batches = queue.batches(items, 8, str)
        first = next(batches)
        assert first == ["a", "b"]  # half of the 4 left, not all of them
        assert all(claims.claim_file(tmp_path, label).exists() for label in first)
        for label in first:
            queue.release(label)
        assert next(batches) == ["d"]
        batches.close()
    assert list(claims.claims_dir(tmp_path).iterdir()) == []


# --- batch size --------------------------------------------------------------------------------------

def test_batch_size_auto_on_cpu_is_the_documented_value(tiny_clip):
    settings, bake = RenderSettings(size=32), BakeSettings()
    assert sizing.resolve_batch_size("auto", tiny_clip, settings, bake, prompts=100) == sizing.CPU_BATCH_SIZE == 8
    assert sizing.resolve_batch_size("auto", tiny_clip, settings, bake, prompts=3) == 3
    assert sizing.resolve_batch_size(5, tiny_clip, settings, bake, prompts=100) == 5


def test_out_of_memory_names_a_batch_size_that_fits(tmp_path, monkeypatch, tiny_clip):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(baker, "bake_prompts", out_of_memory)
    monkeypatch.setattr(sizing, "measure_batch_size",
                        lambda clip, settings, bake, critic_clip=None: sizing.MemoryEstimate(1e9, 2e9, 10 * 2**30, 3))
    job = small_bake(tmp_path, ["a", "b", "c", "d"], batch_size=4)
    with claims.ClaimQueue(tmp_path, "w", ttl=60) as queue, pytest.raises(UserError) as error:
        baker.bake_many(job, queue=queue, clip=tiny_clip, log=lambda line: None)
    message = str(error.value)
    assert message == ("out of GPU memory baking 4 prompts at once on cpu: about 3 fit "
                       "(use --batch-size 3, or --batch-size auto)")
    assert list(claims.claims_dir(tmp_path).iterdir()) == []  # the failed batch's claims are released


def test_gpus_argument():
    assert processes.parse_gpus("cpu:2") == ["cpu", "cpu"]
    for bad in ("cpu:0", "cpu:x", "0,0", "x"):
        with pytest.raises(UserError):
            processes.parse_gpus(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            processes.parse_gpus("all")


@pytest.mark.gpu
def test_auto_batch_size_measured_on_cuda_fits():
    from core import bench
    from core.bake import bake_prompts
    from core.meta_loss import Critic
    from core.models import load_clip

    clip = load_clip("tiny", "cuda")
    settings, bake = RenderSettings(size=32, steps_per_stage=2, cutn=2), BakeSettings(stages=2, meta_steps=1,
                                                                                      eval_starts=1)
    alone = sizing.measure_batch_size(clip, settings, bake)
    critic_clip = bench.bench_clip(bench.RN50, "cuda")  # a bigger critic than the guide, as for ViT-B/32
    estimate = sizing.measure_batch_size(clip, settings, bake, critic_clip)
    assert estimate.per_prompt > alone.per_prompt > 0 and estimate.fits >= 2
    prompts = min(estimate.fits, 64)
    embeddings = torch.nn.functional.normalize(torch.randn(prompts, clip.embed_dim, device="cuda"), dim=-1)
    critic_embeddings = torch.randn(prompts, critic_clip.embed_dim, device="cuda")
    critic = Critic(critic_clip, torch.nn.functional.normalize(critic_embeddings, dim=-1))
    bake_prompts(clip, embeddings, settings, bake, list(range(prompts)), critic=critic)  # no OutOfMemoryError


# --- worker processes and Ray, through the script ----------------------------------------------------

PROMPTS = ["a red circle", "a blue square", "a green tree", "a yellow cat"]


@pytest.mark.slow
def test_two_cpu_workers_bake_each_prompt_once(tmp_path):
    store = tmp_path / "store"
    result = run_script("batch_bake.py", *PROMPTS, *SMALL, "--store", str(store), "--gpus", "cpu:2",
                        "--batch-size", "1", env=ONE_THREAD, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert baked_lines(result.stdout) == {prompt: 1 for prompt in PROMPTS}
    assert len(list(store.glob("*.pt"))) == 4
    assert list((store / claims.CLAIMS_DIR).iterdir()) == []  # every claim released
    assert "started 2 workers" in result.stdout and "baked 4, skipped 0" in result.stdout
    assert result.stdout.count("] batch ") == 4  # a line per batch


@pytest.mark.slow
def test_prompt_of_a_killed_worker_is_baked_by_another(tmp_path):
    store = tmp_path / "store"
    claim = claims.claim_file(store, "a red circle")
    slow = [*SMALL, "--meta-steps", "100000"]  # bakes far longer than the test waits
    victim = subprocess.Popen([sys.executable, str(REPO / "batch_bake.py"), "a red circle", *slow, "--store",
                               str(store), "--gpus", "cpu:1", "--claim-ttl", "2"], cwd=REPO,
                              env={**os.environ, **ONE_THREAD}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not claim.exists() and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.2)
        assert claim.exists(), "the worker never claimed its prompt"
        time.sleep(1.0)  # well inside the bake
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # the script and its worker process
        victim.wait()
    assert claim.exists() and not list(store.glob("*.pt"))  # killed mid-bake: a claim, no path
    result = run_script("batch_bake.py", "a red circle", *SMALL, "--store", str(store), "--claim-ttl", "2",
                        env=ONE_THREAD, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert baked_lines(result.stdout) == {"a red circle": 1}
    assert [p.name for p in store.glob("*.pt")] == ["a_red_circle.pt"] and not claim.exists()


@pytest.mark.slow
def test_ray_tasks_bake_into_the_store(tmp_path):
    pytest.importorskip("ray")
    store = tmp_path / "store"
    result = run_script("batch_bake.py", *PROMPTS[:3], *SMALL, "--store", str(store), "--ray", "auto",
                        "--batch-size", "1", env={**ONE_THREAD, "RAY_DISABLE_USAGE_STATS": "1"}, timeout=240,
                        cwd=tmp_path)
    if result.returncode != 0 and "task slots" not in result.stdout:  # ray.init itself failed
        pytest.skip(f"Ray cannot start on this machine: {result.stderr.strip().splitlines()[-1:]}")
    assert result.returncode == 0, result.stderr
    assert baked_lines(result.stdout) == {prompt: 1 for prompt in PROMPTS[:3]}
    assert sorted(p.name for p in store.glob("*.pt")) == ["a_blue_square.pt", "a_green_tree.pt", "a_red_circle.pt"]
    assert "baked 3, skipped 0" in result.stdout
