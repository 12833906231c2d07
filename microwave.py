#!/usr/bin/env python3
"""Replay a baked path from random pixels; with a PROMPT, blend every stage with that prompt.

  python microwave.py baked/a_red_circle.pt
  python microwave.py "a blue circle" baked/a_red_circle.pt --mix 0.5
"""
from core.interrupts import exit_on_interrupt

exit_on_interrupt(__name__)  # Ctrl-C while the rest loads: "interrupted", exit 130, no traceback
from core import cli, image_jobs  # noqa: E402


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("items", nargs="+", metavar="[PROMPT] PATH", help="optional prompt, then a path file")
    parser.add_argument("--mix", type=cli.finite_float(0, 1), default=0.5,
                        help="weight of PROMPT in each stage target (0 to 1)")
    cli.add_image_arguments(parser)
    args = parser.parse_args()
    if len(args.items) > 2:
        parser.error("expected [PROMPT] PATH")
    cli.run(lambda: image_jobs.microwave_job(cli.microwave_job(args)))


if __name__ == "__main__":
    main()
