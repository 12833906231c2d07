"""The jobs of bake.py and batch_bake.py: which way a bake runs (this process, a worker process per GPU,
or Ray tasks), its summary and the batch's HTML page.

All of them claim each prompt in the store before baking it (`core.claims`), so runs sharing a store never
bake a prompt twice and take over the prompts of a run that died.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from core.bake_reports import write_batch_summary_report
from core.baker import bake_many, check_job
from core.claims import ClaimQueue
from core.errors import UserError
from core.jobs import BakeJob
from core.processes import parse_gpus, run_workers
from core.prompt_lists import read_prompts
from core.ray_tasks import run_ray


def bake_job(job: BakeJob) -> None:
    """Bake one prompt (or image) into a path in the store."""
    check_job(job)
    summary = bake_many(job)
    if summary.failed:
        raise UserError(summary.failed[0][1])


def batch_bake_job(job: BakeJob) -> int:
    """Bake a list of prompts (files of prompts or prompts), skipping those already baked, and print a
    summary: in this process on the job's device, in a worker process per GPU with `gpus`, or in Ray
    tasks with `ray`. Returns the exit status: 1 if a prompt failed or a worker died (a line on stderr
    names each dead worker and its exit code)."""
    prompts = read_prompts(job.prompts)
    if not prompts:
        raise UserError("no prompts given (a file with one prompt per line, or prompts as arguments)")
    if job.gpus and job.ray:
        raise UserError("use either --gpus or --ray, not both")
    job = replace(job, prompts=prompts, skip_existing=True, overwrite=False)
    check_job(job)  # before any worker starts
    if job.ray:
        summary = run_ray(job)
    elif job.gpus:
        summary = run_workers(job, parse_gpus(job.gpus))
    else:
        with ClaimQueue(job.run.store, ttl=job.claim_ttl) as queue:
            summary = bake_many(job, queue=queue)
    print(summary.text())
    if job.report:
        print(f"batch report: {write_batch_summary_report(summary, Path(job.run.out) / 'reports', job.run.store)}")
    for line in summary.lost_workers:
        print(f"error: {line}", file=sys.stderr)
    return 1 if summary.failed or summary.lost_workers else 0
