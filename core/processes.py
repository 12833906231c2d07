"""Worker processes, one per GPU (`batch_bake.py --gpus`): each bakes from the store's shared claim queue
on its device (`core.baker.bake_many`), and the parent merges their summaries.

Every worker claims each prompt before baking it (`core.claims`), so a prompt is baked once, and the
prompts of a worker that dies are baked by another once its claims expire.
"""
from __future__ import annotations

import os
import queue as queues
import signal
import threading
import time
from dataclasses import replace

import torch
import torch.multiprocessing as mp
from tqdm.auto import tqdm

from core.baker import bake_many
from core.claims import ClaimQueue, worker_id
from core.errors import UserError, quote
from core.jobs import BakeJob
from core.limits import MAX_WORKERS
from core.summary import BatchSummary


def parse_gpus(spec: str) -> list[str]:
    """The devices of `--gpus`: `all`, a list of CUDA indices `0,1`, or `cpu:N` (N CPU workers, for tests)."""
    spec = spec.strip()
    if spec.startswith("cpu"):
        count = spec[4:] if spec.startswith("cpu:") else ("1" if spec == "cpu" else "")
        if not count.isdigit() or not 1 <= int(count) <= MAX_WORKERS:
            raise UserError(f"--gpus {quote(spec)}: expected cpu:N with N from 1 to {MAX_WORKERS}")
        return ["cpu"] * int(count)
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "all":
        if available == 0:
            raise UserError("--gpus all: no CUDA GPU here (use --gpus cpu:N to run CPU workers)")
        return [f"cuda:{index}" for index in range(available)]
    try:
        indices = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--gpus {quote(spec)}: expected all, a list like 0,1, or cpu:N") from None
    if not indices or len(set(indices)) != len(indices):
        raise UserError(f"--gpus {quote(spec)}: expected all, a list of distinct GPU indices like 0,1, or cpu:N")
    bad = [index for index in indices if not 0 <= index < available]
    if bad:
        raise UserError(f"--gpus {spec}: GPU {bad[0]} asked for, but {available} GPU(s) exist")
    return [f"cuda:{index}" for index in indices]


def _threads_for(workers: int) -> int:
    # Worker processes share the cores: oversubscribed OpenMP threads spin and can be 100x slower.
    return max(1, (os.cpu_count() or 1) // workers)


def _worker_main(rank: int, device: str, job: BakeJob, workers: int, results) -> None:
    """One worker process: bake from the shared claim queue on `device`, send back its summary."""
    # tqdm's default lock is a multiprocessing semaphore; a worker killed with it would leave the parent's
    # resource tracker warning of a "leaked semaphore". A thread lock serves a process's own bars.
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(_threads_for(workers))
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    name = f"w{rank}"

    def log(line: str) -> None:
        print("\n".join(f"[{name} {device}] {part}" for part in line.splitlines()), flush=True)

    job = replace(job, run=replace(job.run, device=device, quiet=job.run.quiet or workers > 1))
    try:
        with ClaimQueue(job.run.store, worker_id(name), job.claim_ttl, workers, log=log) as queue:
            summary = bake_many(job, queue=queue, log=log)
        results.put((rank, summary, None))
    except UserError as error:
        results.put((rank, None, str(error)))
    except KeyboardInterrupt:
        results.put((rank, None, "interrupted"))


def run_workers(job: BakeJob, devices: list[str]) -> BatchSummary:
    """Bake the job's prompts with one spawned process per device, all pulling from the store's claim queue.

    Returns the merged `BatchSummary`, whose `lost_workers` names each worker that died (killed, crashed);
    a worker's UserError (e.g. out of memory) is raised after all workers have finished, and prompts left
    unbaked by workers that died are reported as failed. Ctrl-C reaches this process only (the workers
    ignore it), which stops the workers and raises KeyboardInterrupt.
    """
    began = time.monotonic()
    context = mp.get_context("spawn")  # CUDA cannot be used in forked children
    results = context.Queue()
    processes = [context.Process(target=_worker_main, args=(rank, device, job, len(devices), results),
                                 name=f"bake-worker-{rank}") for rank, device in enumerate(devices)]
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited: Ctrl-C is the parent's to handle
    try:
        for process in processes:
            process.start()
    finally:
        signal.signal(signal.SIGINT, interrupt)
    print(f"started {len(processes)} workers on {', '.join(devices)} (claims in {job.run.store}/.claims, "
          f"TTL {job.claim_ttl:.0f} s)", flush=True)
    try:
        summaries, errors = _collect(processes, devices, results)
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    finally:
        for process in processes:
            process.join()
        results.close()
        results.join_thread()
    lost = [_death(rank, devices[rank], process) for rank, process in enumerate(processes) if process.exitcode]
    summary = BatchSummary.merge(summaries, job.prompts, time.monotonic() - began, workers=len(devices),
                                 unfinished_reason="; ".join(lost + errors[:1]) or "not baked")
    summary.lost_workers = tuple(lost)
    if errors:
        print(summary.text())
        raise UserError(errors[0])
    return summary


def _death(rank: int, device: str, process) -> str:
    """The line that reports a dead worker: which, its process id and exit code (a signal by its name)."""
    code = process.exitcode
    how = f" ({signal.Signals(-code).name})" if code < 0 and -code in signal.valid_signals() else ""
    return f"worker {rank} ({device}, pid {process.pid}) died with exit code {code}{how}"


def _collect(processes: list, devices: list[str], results) -> tuple[list[BatchSummary], list[str]]:
    """Wait for every worker's result (summary or error) or its death; returns the summaries and errors."""
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
    return summaries, errors
