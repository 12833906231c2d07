"""Baking at the hardware limit: how many prompts fit in one batch, one worker per GPU, Ray tasks.

Every way `batch_bake.py` runs goes through `core.batch.bake_many` with a `core.claims.ClaimQueue`, so one
process, worker processes on the GPUs of a machine (`--gpus`) and Ray tasks on a cluster (`--ray`) can share
one store: each prompt is claimed before it is baked, so it is baked once, and the prompt of a worker that
dies is baked again by another once its claim expires.

Batch size `auto`: on CUDA, a probe bake (one meta-step, the run's real settings) at P = 1 and P = 2
measures peak memory; memory grows linearly with P, so P = (free · (1 − headroom) − fixed) / per-prompt,
with 20 % of the free memory kept as headroom. On CPU memory is rarely the limit and throughput stops
growing at small batches, so `auto` is `CPU_BATCH_SIZE` (8).
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, replace

import torch

from core.errors import UserError

CPU_BATCH_SIZE = 8  # `--batch-size auto` on CPU: batching gains level off around here (see bench.py)
HEADROOM = 0.2  # share of free GPU memory `auto` leaves unused (allocator fragmentation, other processes)
AUTO = "auto"
LOCAL = "local"


def batch_size_arg(text: str) -> int | str:
    """argparse type of `--batch-size`: `auto` or a positive number of prompts."""
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of prompts, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the batch size must be at least 1, got {value}")
    return value


# --- how many prompts fit ----------------------------------------------------------------------------

@dataclass
class MemoryEstimate:
    """Peak memory of a bake as fixed + per_prompt · P (bytes), and the free memory it was fitted to."""

    fixed: float
    per_prompt: float
    free: int
    fits: int

    def text(self) -> str:
        gib = 1024 ** 3
        return (f"{self.fits} prompts fit ({self.fixed / gib:.2f} GiB + {self.per_prompt / gib:.3f} GiB a prompt, "
                f"{1 - HEADROOM:.0%} of {self.free / gib:.1f} GiB free)")


_MEASURED: dict[tuple, MemoryEstimate] = {}  # per process: a Ray worker bakes many batches alike


def measure_batch_size(clip, settings, bake, critic_clip=None) -> MemoryEstimate | None:
    """How many prompts fit in one bake on the model's CUDA device (None on CPU: nothing to measure).

    Runs a probe bake at P = 1 and 2 and extrapolates peak memory linearly; `fits` is 0 when even one
    prompt does not fit. The probe has the run's shapes (size, views, stages, unroll, starts, held-out
    starts, the critic's model when the bake has one) but one meta-step and only `unroll` steps a stage:
    the other steps keep no autograd graph, so they add time, not memory.
    """
    from core.bake import Critic, bake_prompts

    device = clip.device
    if device.type != "cuda":
        return None
    key = (str(device), clip.name, repr(settings), repr(bake), critic_clip and critic_clip.name)
    if key in _MEASURED:
        return _MEASURED[key]
    probe = replace(bake, meta_steps=1)
    settings = replace(settings, steps_per_stage=max(1, min(settings.steps_per_stage, bake.unroll)))
    embedding = torch.nn.functional.normalize(torch.randn(1, clip.embed_dim, device=device), dim=-1)
    critic_embedding = None if critic_clip is None else torch.nn.functional.normalize(
        torch.randn(1, critic_clip.embed_dim, device=critic_clip.device), dim=-1)
    peaks = []
    for prompts in (1, 2):
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            critic = None if critic_clip is None else Critic(critic_clip, critic_embedding.repeat(prompts, 1),
                                                             bake.critic_weight)
            bake_prompts(clip, embedding.repeat(prompts, 1), settings, probe, list(range(prompts)), critic=critic)
        except torch.cuda.OutOfMemoryError:
            peaks.append(math.inf)  # memory is freed below, outside the handler that holds the traceback
            break
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    if len(peaks) < 2 or math.isinf(peaks[-1]):
        estimate = MemoryEstimate(peaks[0], peaks[0], free, 0 if math.isinf(peaks[0]) else 1)
    else:
        per_prompt = max(peaks[1] - peaks[0], 1.0)
        fixed = max(peaks[0] - per_prompt, 0.0)
        estimate = MemoryEstimate(fixed, per_prompt, free, max(0, int((free * (1 - HEADROOM) - fixed) // per_prompt)))
    _MEASURED[key] = estimate
    return estimate


def resolve_batch_size(batch_size: int | str, clip, settings, bake, prompts: int,
                       log=print, critic_clip=None) -> int:
    """The number of prompts per batched bake: `batch_size`, or for `auto` what fits (at most `prompts`)."""
    if batch_size != AUTO:
        return int(batch_size)
    estimate = measure_batch_size(clip, settings, bake, critic_clip)
    if estimate is None:
        size = CPU_BATCH_SIZE
        log(f"batch size auto: {size} on {clip.device.type} (the fixed CPU value)")
    else:
        if estimate.fits < 1:
            raise UserError(f"not even one prompt fits in {clip.device} at these settings "
                            f"(try a smaller --size, --cutn, --unroll or --starts)")
        size = estimate.fits
        log(f"batch size auto on {clip.device}: {estimate.text()}")
    return max(1, min(size, max(1, prompts)))


def oom_message(tried: int, clip, settings, bake, critic_clip=None) -> str:
    """The one-line error for a bake of `tried` prompts that ran out of GPU memory, naming a P that fits."""
    estimate = measure_batch_size(clip, settings, bake, critic_clip)
    where = clip.device
    if estimate is None:
        return f"out of memory baking {tried} prompts at once on {where} (try a smaller --batch-size)"
    if estimate.fits < 1:
        return (f"out of GPU memory baking {tried} prompts at once on {where}, and even 1 does not fit "
                f"(try a smaller --size, --cutn, --unroll or --starts)")
    # the probe can be optimistic (fragmentation, other processes): never suggest what just failed
    suggestion = estimate.fits if estimate.fits < tried else max(1, tried // 2)
    return (f"out of GPU memory baking {tried} prompts at once on {where}: about {suggestion} fit "
            f"(use --batch-size {suggestion}, or --batch-size auto)")


# --- worker processes, one per GPU ---------------------------------------------------------------------

def parse_gpus(spec: str) -> list[str]:
    """The devices of `--gpus`: `all`, a list of CUDA indices `0,1`, or `cpu:N` (N CPU workers, for tests)."""
    spec = spec.strip()
    if spec.startswith("cpu"):
        count = spec[4:] if spec.startswith("cpu:") else ("1" if spec == "cpu" else "")
        if not count.isdigit() or int(count) < 1:
            raise UserError(f"--gpus {spec}: expected cpu:N with N >= 1")
        return ["cpu"] * int(count)
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "all":
        if available == 0:
            raise UserError("--gpus all: no CUDA GPU here (use --gpus cpu:N to run CPU workers)")
        return [f"cuda:{index}" for index in range(available)]
    try:
        indices = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--gpus {spec}: expected all, a list like 0,1, or cpu:N") from None
    if not indices or len(set(indices)) != len(indices):
        raise UserError(f"--gpus {spec}: expected all, a list of distinct GPU indices like 0,1, or cpu:N")
    bad = [index for index in indices if not 0 <= index < available]
    if bad:
        raise UserError(f"--gpus {spec}: GPU {bad[0]} asked for, but {available} GPU(s) exist")
    return [f"cuda:{index}" for index in indices]


def _threads_for(workers: int) -> int:
    # Worker processes share the cores: oversubscribed OpenMP threads spin and can be 100x slower.
    return max(1, (os.cpu_count() or 1) // workers)


def _worker_main(rank: int, device: str, prompts: list[str], args: argparse.Namespace, workers: int,
                 results) -> None:
    """One worker process: bake from the shared claim queue on `device`, send back its summary."""
    from core import batch
    from core.claims import ClaimQueue, worker_id

    torch.set_num_threads(_threads_for(workers))
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    name = f"w{rank}"

    def log(line: str) -> None:
        print("\n".join(f"[{name} {device}] {part}" for part in line.splitlines()), flush=True)

    args = argparse.Namespace(**{**vars(args), "device": device, "quiet": args.quiet or workers > 1})
    try:
        with ClaimQueue(args.store, worker_id(name), args.claim_ttl, workers, log=log) as queue:
            summary = batch.bake_many(prompts, args, batch_size=args.batch_size, skip_existing=True,
                                    queue=queue, log=log)
        results.put((rank, summary, None))
    except UserError as error:
        results.put((rank, None, str(error)))
    except KeyboardInterrupt:
        results.put((rank, None, "interrupted"))


def run_workers(prompts: list[str], args: argparse.Namespace, devices: list[str]):
    """Bake `prompts` with one spawned process per device, all pulling from the store's claim queue.

    Returns the merged `BatchSummary`; a worker's UserError (e.g. out of memory) is raised after all
    workers have finished, and prompts left unbaked by workers that died are reported as failed.
    """
    import queue as queues

    import torch.multiprocessing as mp

    from core.batch import BatchSummary

    began = time.monotonic()
    context = mp.get_context("spawn")  # CUDA cannot be used in forked children
    results = context.Queue()
    processes = [context.Process(target=_worker_main, args=(rank, device, prompts, args, len(devices), results),
                                 name=f"bake-worker-{rank}") for rank, device in enumerate(devices)]
    for process in processes:
        process.start()
    print(f"started {len(processes)} workers on {', '.join(devices)} (claims in {args.store}/.claims, "
          f"TTL {args.claim_ttl:.0f} s)", flush=True)
    summaries, errors = [], []
    received = set()
    while len(received) < len(processes):
        try:
            rank, summary, error = results.get(timeout=0.5)
        except queues.Empty:
            if all(not process.is_alive() for process in processes):
                try:  # a result sent just before exiting may still be in flight
                    rank, summary, error = results.get(timeout=2)
                except queues.Empty:
                    break
            else:
                continue
        received.add(rank)
        if summary is not None:
            summaries.append(summary)
        if error is not None:
            errors.append(f"worker {rank} ({devices[rank]}): {error}")
    for process in processes:
        process.join()
    crashed = [f"worker {rank} ({devices[rank]}) exited with code {process.exitcode}"
               for rank, process in enumerate(processes) if rank not in received]
    summary = BatchSummary.merge(summaries, prompts, time.monotonic() - began, workers=len(devices),
                                 unfinished_reason="; ".join(crashed + errors[:1]) or "not baked")
    if errors:
        print(summary.text())
        raise UserError(errors[0])
    return summary


# --- Ray tasks ---------------------------------------------------------------------------------------

_CLIPS: dict[tuple[str, str], object] = {}  # per Ray worker process: load a model once, bake many batches


def _ray_bake_batch(prompts: list[str], args: argparse.Namespace, slots: int):
    """The body of one Ray task: claim one batch of `prompts`, bake it, save it; returns its summary."""
    import ray

    from core import batch
    from core.claims import ClaimQueue, worker_id
    from core.models import load_clip

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    key = (args.model, args.device)
    if key not in _CLIPS:
        _CLIPS[key] = load_clip(args.model, args.device, getattr(args, "compile", False))
    name = f"ray-{ray.get_runtime_context().get_task_id()[:8]}"

    def log(line: str) -> None:
        print("\n".join(f"[{name}] {part}" for part in line.splitlines()), flush=True)

    with ClaimQueue(args.store, worker_id(name), args.claim_ttl, slots, log=log) as queue:
        return batch.bake_many(prompts, args, batch_size=args.batch_size, skip_existing=True, queue=queue,
                             log=log, clip=_CLIPS[key], max_batches=1)


def _init_ray(address: str):
    """Connect to Ray: `auto` = a cluster running here (or RAY_ADDRESS), else a new local instance;
    `local` = always a new local instance; anything else is a cluster address. Returns (ray, started)."""
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs the ray package (pip install 'ray[default]')") from None
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # workers import `core` from the same path, which on a cluster must be shared like the store
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}}
    if address in (AUTO, LOCAL):
        if address == AUTO:
            try:
                ray.init(address="auto", runtime_env=runtime_env)
                return ray, False
            except ConnectionError:
                pass
        # tasks pass only prompts and summaries around: a small object store is plenty
        try:
            ray.init(address="local", include_dashboard=False, object_store_memory=100 * 1024 * 1024,
                     runtime_env=runtime_env)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise UserError(f"cannot start a local Ray instance: {str(error).splitlines()[0]}") from None
        return ray, True
    else:
        try:
            ray.init(address=address, runtime_env=runtime_env)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise UserError(f"cannot connect to Ray at {address}: {str(error).splitlines()[0]}") from None
    return ray, False


def run_ray(prompts: list[str], args: argparse.Namespace):
    """Bake `prompts` with Ray tasks, each baking one batch on one GPU (or CPU), all sharing the claims.

    As many tasks run at once as the cluster has GPUs (CPUs when it has none or `--device cpu`); a task
    that baked a batch is followed by another until no prompt is left.
    """
    from core.batch import BatchSummary

    began = time.monotonic()
    ray, started = _init_ray(args.ray)
    try:
        resources = ray.cluster_resources()
        use_gpu = resources.get("GPU", 0) >= 1 and args.device != "cpu"
        slots = int(resources.get("GPU", 0)) if use_gpu else max(1, int(resources.get("CPU", 1)))
        slots = min(slots, len(prompts))  # more tasks than prompts would only wait
        task = ray.remote(num_gpus=1 if use_gpu else 0, num_cpus=1, max_retries=2)(_ray_bake_batch)
        task_args = argparse.Namespace(**{**vars(args), "device": "cuda" if use_gpu else "cpu", "quiet": True})
        print(f"ray: {slots} task slots ({'GPU' if use_gpu else 'CPU'}), claims in {args.store}/.claims, "
              f"TTL {args.claim_ttl:.0f} s", flush=True)
        summaries, errors, died = [], [], []
        running = [task.remote(prompts, task_args, slots) for _ in range(slots)]
        while running:
            done, running = ray.wait(running, num_returns=1)
            try:
                summary = ray.get(done[0])
            except ray.exceptions.RayTaskError as error:  # the task raised (a user error or a bug): stop the run
                cause = getattr(error, "cause", None)
                errors.append(str(cause) if isinstance(cause, UserError)
                              else f"a Ray task failed: {type(cause).__name__}: {cause}")
                continue
            except ray.exceptions.RayError as error:  # its worker died: the claims expire, bake on
                died.append(f"a Ray task died ({str(error).splitlines()[0]})")
                summary = None
            if summary is not None:
                summaries.append(summary)
            # a task that baked (or died) is followed by another; one that found nothing left is not
            if (summary is None or summary.batches) and not errors and len(died) <= len(prompts) + slots:
                running.append(task.remote(prompts, task_args, slots))
        merged = BatchSummary.merge(summaries, prompts, time.monotonic() - began, workers=slots,
                                    unfinished_reason="; ".join(errors[:1] + died[:1]) or "not baked")
    finally:
        if started:
            ray.shutdown()
    if errors:
        print(merged.text())
        raise UserError(errors[0])
    return merged
