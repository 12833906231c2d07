#!/usr/bin/env python3
"""Does baking pay off? Render each prompt with normal, microwave (its baked path, baked first if
missing) and auto_microwave (its own path left out) at equal step budget and size, for several seeds;
score every image with one or more judges that did not guide (a CLIP, or the classifier judge
scenes-classifier), ask each judge whether a scene prompt's colour, shape, position and relation are
right (the stated caption against captions differing in that attribute), and check scene prompts' pixels.

Writes the images, results.csv and an HTML page with the methods side by side; prints the summary (per
judge: mean score, d = mean difference to normal over (prompt, seed) pairs +- standard error, prompts
won, attribute accuracies, pixel checks).

  python evaluate.py prompts/scenes.txt --model scenes --judge scenes-judge-3,scenes-classifier
"""
from core.interrupts import exit_on_interrupt

exit_on_interrupt(__name__)  # Ctrl-C while the rest loads: "interrupted", exit 130, no traceback
from core import cli, evaluate_job  # noqa: E402
from core.auto import AUTO_MODES  # noqa: E402
from core.limits import MAX_K, MAX_PATH_WEIGHT, MAX_SEEDS  # noqa: E402


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("prompts_file",
                        help="a UTF-8 file, one prompt per line; a line starting with '#' is a comment")
    parser.add_argument("--judge", default="scenes-judge-3",
                        help="the scoring model, or several comma-separated (images rendered once, scored by each): "
                             "a CLIP name or file (scenes-judge-3: trained on a third renderer, chooses the "
                             "defaults), or scenes-classifier (scene prompts only); each must differ from "
                             "--model and from the bake's critic")
    parser.add_argument("--seeds", type=cli.int_in_range(1, MAX_SEEDS), default=3,
                        help=f"random starts per prompt and method (at most {MAX_SEEDS})")
    parser.add_argument("--methods", default="normal,microwave,auto", help="comma-separated methods")
    parser.add_argument("--k", type=cli.int_in_range(1, MAX_K), default=2, help="nearest paths blended by auto")
    parser.add_argument("--auto-mode", choices=list(AUTO_MODES), default=cli.NOT_GIVEN,
                        help="how auto makes its stage targets (see auto_microwave.py; default: predict, or transfer "
                             "when the store has fewer than 2 other paths of the model to learn from)")
    parser.add_argument("--path-weight", type=cli.finite_float(-MAX_PATH_WEIGHT, MAX_PATH_WEIGHT), default=None,
                        help="weight of the paths in auto (default: the mode's, see auto_microwave.py)")
    parser.add_argument("--batch-size", type=cli.batch_size_arg, default=8,
                        help="prompts baked together when baking first (auto: as many as fit)")
    parser.add_argument("--store-prompts", help="more prompts to bake into the store first (not evaluated): "
                                                 "the neighbours auto draws on")
    cli.add_bake_arguments(parser)
    args = parser.parse_args()
    cli.run(lambda: evaluate_job.evaluate_job(cli.evaluate_job(args)))


if __name__ == "__main__":
    main()
