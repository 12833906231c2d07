#!/usr/bin/env python3
"""Bake a prompt (or an image) into a reusable path of per-stage CLIP targets.

The guides are meta-optimised so that replaying them from random pixels ends closer to the prompt
than aiming straight at it; the log compares the baked path with a normal run of the same steps.

  python bake.py "a red circle" --model scenes
"""
from core.interrupts import exit_on_interrupt

exit_on_interrupt(__name__)  # Ctrl-C while the rest loads: "interrupted", exit 130, no traceback
from core import bake_jobs, cli  # noqa: E402


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("prompt", help="text, weighted targets ('a lemon:1 | text:-0.5') or an image file")
    cli.add_bake_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace a path already in the store")
    args = parser.parse_args()
    cli.run(lambda: bake_jobs.bake_job(cli.bake_job(args)))


if __name__ == "__main__":
    main()
