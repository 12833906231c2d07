"""Ray tasks (`batch_bake.py --ray`): each task claims one batch of prompts from the store's shared claim
queue, bakes it on one GPU (or CPU) with `core.baker.bake_many` and saves it into the shared store; as
many tasks run at once as the cluster has GPUs, and a task that baked is followed by another.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace

import torch

from core.baker import bake_many
from core.claims import ClaimQueue, worker_id
from core.errors import UserError
from core.jobs import BakeJob
from core.models import Clip, load_clip
from core.summary import BatchSummary

AUTO = "auto"
LOCAL = "local"

_CLIPS: dict[tuple[str, str], Clip] = {}  # per Ray worker process: load a model once, bake many batches


def _ray_bake_batch(job: BakeJob, slots: int) -> BatchSummary:
    """The body of one Ray task: claim one batch of the job's prompts, bake it, save it; returns its summary."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    key = (job.run.model, job.run.device)
    if key not in _CLIPS:
        _CLIPS[key] = load_clip(job.run.model, job.run.device, job.run.compile)
    name = f"ray-{ray.get_runtime_context().get_task_id()[:8]}"

    def log(line: str) -> None:
        print("\n".join(f"[{name}] {part}" for part in line.splitlines()), flush=True)

    with ClaimQueue(job.run.store, worker_id(name), job.claim_ttl, slots, log=log) as queue:
        return bake_many(job, queue=queue, log=log, clip=_CLIPS[key], max_batches=1)


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


def run_ray(job: BakeJob) -> BatchSummary:
    """Bake the job's prompts with Ray tasks, each baking one batch on one GPU (or CPU), all sharing the claims.

    As many tasks run at once as the cluster has GPUs (CPUs when it has none or `--device cpu`); a task
    that baked a batch is followed by another until no prompt is left.
    """
    began = time.monotonic()
    ray, started = _init_ray(job.ray)
    try:
        resources = ray.cluster_resources()
        use_gpu = resources.get("GPU", 0) >= 1 and job.run.device != "cpu"
        slots = int(resources.get("GPU", 0)) if use_gpu else max(1, int(resources.get("CPU", 1)))
        slots = min(slots, len(job.prompts))  # more tasks than prompts would only wait
        # No retries by Ray: a task whose worker died is reported (exit status 1), and the next task takes over
        # its prompts through the claim queue, as a worker process of --gpus does.
        task = ray.remote(num_gpus=1 if use_gpu else 0, num_cpus=1, max_retries=0)(_ray_bake_batch)
        task_job = replace(job, run=replace(job.run, device="cuda" if use_gpu else "cpu", quiet=True))
        print(f"ray: {slots} task slots ({'GPU' if use_gpu else 'CPU'}), claims in {job.run.store}/.claims, "
              f"TTL {job.claim_ttl:.0f} s", flush=True)
        summaries, errors, died = [], [], []
        running = [task.remote(task_job, slots) for _ in range(slots)]
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
            if (summary is None or summary.batches) and not errors and len(died) <= len(job.prompts) + slots:
                running.append(task.remote(task_job, slots))
        merged = BatchSummary.merge(summaries, job.prompts, time.monotonic() - began, workers=slots,
                                    unfinished_reason="; ".join(errors[:1] + died[:1]) or "not baked")
        merged.lost_workers = tuple(died)  # reported on stderr, and the run's exit status is 1 (core.bake_jobs)
    finally:
        if started:
            ray.shutdown()
    if errors:
        print(merged.text())
        raise UserError(errors[0])
    return merged
