#!/usr/bin/env python3
"""Make an image for a prompt never baked, from the paths baked for other prompts in the store.

Default (--mode predict): each stage aims at the new prompt plus the offsets (what baking changed in a
path: each stage minus its prompt's embedding) that a ridge regression, fitted on every path of the model
in the store, predicts from the new prompt's embedding, scaled by --path-weight. --mode transfer adds the
mean offset of the k nearest paths instead (the default when the store has fewer than 2 paths to learn from).

  python auto_microwave.py "a red square"
  python auto_microwave.py "a red square" --mode transfer --k 2
"""
from core.interrupts import exit_on_interrupt

exit_on_interrupt(__name__)  # Ctrl-C while the rest loads: "interrupted", exit 130, no traceback
from core import cli, image_jobs  # noqa: E402
from core.auto import AUTO_MODES  # noqa: E402
from core.limits import MAX_K, MAX_PATH_WEIGHT  # noqa: E402


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("prompt", help="the new prompt")
    parser.add_argument("--k", type=cli.int_in_range(1, MAX_K), default=2,
                        help=f"how many nearest paths to blend (at most {MAX_K}; not used by predict)")
    parser.add_argument("--mode", choices=list(AUTO_MODES), default=cli.NOT_GIVEN,
                        help="; ".join(f"{name}: {doc}" for name, (doc, _) in AUTO_MODES.items())
                        + " (default: predict, or transfer when the store has fewer than 2 paths to learn from)")
    parser.add_argument("--path-weight", type=cli.finite_float(-MAX_PATH_WEIGHT, MAX_PATH_WEIGHT), default=None,
                        help="weight of the paths (default: " + ", ".join(
                            f"{weight:g} for {name}" for name, (_, weight) in AUTO_MODES.items()) + ")")
    parser.add_argument("--leave-out", action="store_true", help="ignore a path baked for this very prompt")
    cli.add_image_arguments(parser)
    args = parser.parse_args()
    cli.run(lambda: image_jobs.auto_microwave_job(cli.auto_job(args)))


if __name__ == "__main__":
    main()
