#!/usr/bin/env python3
"""The control: optimise pixels straight toward the prompt, by default with the same total steps and
size as a microwave run of the same recipe (stages x steps-per-stage).

  python normal.py "a red circle"
"""
from core.interrupts import exit_on_interrupt

exit_on_interrupt(__name__)  # Ctrl-C while the rest loads: "interrupted", exit 130, no traceback
from core import cli, image_jobs  # noqa: E402
from core.limits import MAX_STEPS  # noqa: E402


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("prompt", help="text, weighted targets or an image file")
    parser.add_argument("--steps", type=cli.int_in_range(1, MAX_STEPS),
                        help=f"total steps, at most {MAX_STEPS} (default: the recipe's stages x steps-per-stage)")
    cli.add_image_arguments(parser)
    args = parser.parse_args()
    cli.run(lambda: image_jobs.normal_job(cli.normal_job(args)))


if __name__ == "__main__":
    main()
