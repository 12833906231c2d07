#!/usr/bin/env python3
"""Bake many prompts: from files (one prompt per line, '#' comments) or as arguments.

Prompts already in the store are skipped, so an interrupted run resumes; a failing prompt does not
stop the others; a summary is printed at the end.

  python batch_bake.py prompts.txt --batch-size 8
"""
from core import app, cli


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("prompts", nargs="+", metavar="FILE|PROMPT", help="prompt files or prompts")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts baked together as one batch")
    cli.add_bake_arguments(parser)
    args = parser.parse_args()
    args.overwrite = False
    cli.run(lambda: app.batch_bake_job(args))


if __name__ == "__main__":
    main()
