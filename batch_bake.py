#!/usr/bin/env python3
"""Bake many prompts: from files (one prompt per line; a line starting with '#' is a comment) or as arguments.

Prompts already in the store are skipped, so an interrupted run resumes; a failing prompt does not
stop the others; a line is printed per batch and a summary at the end.

Every prompt is claimed in the store (<store>/.claims) before it is baked, so runs sharing a store
(worker processes, Ray tasks, other machines on a shared file system) bake each prompt once, and the
prompts of a run that died are baked again once its claims expire (--claim-ttl).

  python batch_bake.py prompts.txt --batch-size auto
  python batch_bake.py prompts.txt --gpus all            # one worker process per GPU
  python batch_bake.py prompts.txt --gpus cpu:2          # two CPU worker processes (testing, CPU-only)
  python batch_bake.py prompts.txt --ray auto            # Ray tasks, one batch on one GPU each
"""
from core.interrupts import exit_on_interrupt

exit_on_interrupt(__name__)  # Ctrl-C while the rest loads: "interrupted", exit 130, no traceback
from core import bake_jobs, cli  # noqa: E402
from core.claims import DEFAULT_TTL  # noqa: E402
from core.limits import MAX_CLAIM_TTL  # noqa: E402
from core.sizing import CPU_BATCH_SIZE  # noqa: E402


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("prompts", nargs="+", metavar="FILE|PROMPT", help="prompt files or prompts")
    parser.add_argument("--batch-size", type=cli.batch_size_arg, default="auto",
                        help="prompts baked together as one batch; auto = as many as fit in GPU memory "
                             f"(measured by a probe bake, 20%% headroom), {CPU_BATCH_SIZE} on CPU")
    parser.add_argument("--gpus", help="one worker process per GPU: all, or indices like 0,1; cpu:N runs N CPU "
                                       "worker processes (for testing, or CPU-only machines); overrides --device")
    parser.add_argument("--ray", metavar="auto|local|ADDRESS",
                        help="bake with Ray tasks (one batch on one GPU each, CPU if the cluster has none): "
                             "auto = the cluster running here, else a new local one; local = a new local one; "
                             "or a cluster address. "
                             "The store (and this repository) must be at the same path on every node")
    parser.add_argument("--claim-ttl", type=cli.finite_float(0.1, MAX_CLAIM_TTL), default=DEFAULT_TTL,
                        help="seconds after its last heartbeat when a claim on a prompt expires and another "
                             "worker may bake it")
    cli.add_bake_arguments(parser)
    args = parser.parse_args()
    cli.run(lambda: bake_jobs.batch_bake_job(cli.bake_job(args)))


if __name__ == "__main__":
    main()
