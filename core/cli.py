"""What every script shares: common arguments, and turning user mistakes into one-line errors."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from core.errors import UserError

EXIT_USAGE = 2


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, keep the description's line breaks."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit 2 (argparse's own convention)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum` (so a bad count is a one-line error
    before any work, not a traceback in the middle of it)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def toolkit_epilog() -> str:
    """The transforms, constraints and post-processing a recipe can use, listed from their registries."""
    from core.constraints import CONSTRAINTS
    from core.postproc import POSTPROC
    from core.transforms import TRANSFORMS

    parts = [f"{registry.title} (recipe key '{key}'):\n" + "\n".join(f"  {line}" for line in registry.help_text().splitlines())
             for key, registry in (("views", TRANSFORMS), ("constraints", CONSTRAINTS), ("postproc", POSTPROC))]
    return "\n\n".join(parts) + "\n\nFull reference: docs/reference.md"


def make_parser(description: str, recipe: bool = True, outputs: bool = True) -> Parser:
    """A parser with the options every script takes (model, device, seed, out, store, ...).

    `recipe`: also the recipe options; `outputs`: also those of scripts that make images or paths
    (seed, out, store, truncate, wandb), which a benchmark has no use for.
    """
    from core.models import MODEL_HELP
    from core.store import DEFAULT_STORE

    parser = Parser(description=description, formatter_class=_Formatter,
                    epilog=toolkit_epilog() if recipe else None)
    parser.add_argument("--model", default="auto", help=MODEL_HELP)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    if outputs:
        parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same image")
        parser.add_argument("--out", default="outputs", help="directory for images")
        parser.add_argument("--store", default=str(DEFAULT_STORE), help="directory of baked paths")
        parser.add_argument("--truncate", action="store_true", help="cut prompts longer than 77 tokens")
        parser.add_argument("--wandb", action="store_true", help="log losses and images to Weights & Biases")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile image encoding in the inner loop (pays off on GPU for long runs)")
    if recipe:
        add_recipe_arguments(parser)
    return parser


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that override the recipe (None = keep the recipe's value)."""
    group = parser.add_argument_group("recipe (overrides the values of --recipe)")
    # No argparse default, so that an explicit `--recipe default` can override a path's own recipe.
    group.add_argument("--recipe", default=argparse.SUPPRESS,
                       help="a recipe name in recipes/ or a YAML file (default: 'default'; microwave.py: the "
                            "recipe its path was baked with)")
    group.add_argument("--size", type=int, help="image side in pixels")
    group.add_argument("--steps-per-stage", type=int, help="inner steps per stage")
    group.add_argument("--lr", type=float, help="pixel learning rate (Adam)")
    group.add_argument("--tv-weight", type=float, help="total-variation weight")
    group.add_argument("--cutn", type=int, help="augmented views per step")
    group.add_argument("--quantize", type=int, help="colour levels of the saved image (16 = the original's "
                                                    "pixel-art look; 0 = off)")


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the scripts that render one image (normal.py, microwave.py, auto_microwave.py)."""
    group = parser.add_argument_group("the image")
    group.add_argument("--init", help="start from this image instead of random pixels")
    group.add_argument("--save-every", type=int_at_least(0), default=0, help="save a frame every N steps (0 = never)")
    group.add_argument("--gif", action="store_true", help="also write the frames as an animated GIF")
    group.add_argument("--upscale", type=int_at_least(1), default=4, help="nearest-neighbour upscale of saved images")


def add_bake_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of a bake (bake.py, batch_bake.py, and evaluate.py for the paths it bakes first)."""
    from core.bake import META_OPTIMIZERS, BakeSettings

    defaults = BakeSettings()
    group = parser.add_argument_group("baking")
    group.add_argument("--stages", type=int_at_least(1),
                       help=f"guides in a path (default: the recipe's; {defaults.stages} in the default recipe)")
    group.add_argument("--meta-steps", type=int_at_least(1),
                       help=f"meta-optimisation steps or generations (default: the recipe's; {defaults.meta_steps} "
                            "in the default recipe)")
    group.add_argument("--meta", choices=list(META_OPTIMIZERS), default=defaults.meta,
                       help="meta-optimiser: " + "; ".join(f"{name}: {doc}" for name, (_, doc) in META_OPTIMIZERS.items()))
    group.add_argument("--meta-lr", type=float, default=defaults.meta_lr, help="learning rate of the guides (unrolled)")
    group.add_argument("--unroll", type=int_at_least(1), default=defaults.unroll,
                       help="K: inner steps differentiated at the end of each stage (unrolled)")
    group.add_argument("--starts", type=int_at_least(1), default=defaults.starts, help="random starts per meta-step")
    group.add_argument("--prompt-pull", type=float, default=defaults.prompt_pull,
                       help="weight of a decaying pull of the guides toward the prompt (the original's regulariser)")
    group.add_argument("--eval-starts", type=int_at_least(1), default=defaults.eval_starts,
                       help="held-out random starts for the baked-vs-normal comparison")
    group.add_argument("--population", type=int_at_least(2), default=defaults.population,
                       help="candidates a generation (cma, ga, anchored-cma, anchored-es)")
    group.add_argument("--sigma", type=float, default=defaults.sigma,
                       help="search step (cma, anchored-cma) / mutation strength (ga, anchored-es)")
    group.add_argument("--no-report", dest="report", action="store_false",
                       help="skip the HTML report (images per stage, loss curves, GIF) in OUT/reports/")
    group.add_argument("--trust-angle", type=float, default=defaults.trust_angle,
                       help="radians a guide may turn away from the prompt (cma, ga)")
    group.add_argument("--meta-views", type=int_at_least(0), default=defaults.meta_views,
                       help="score the final image on this many augmented views while baking (0 = the image itself)")
    group.add_argument("--critic", default=defaults.critic,
                       help="the model that scores the final images while baking, so paths are rewarded for "
                            "images another model recognises too: auto (scenes-critic for the scenes models, "
                            "RN50 for OpenAI ones), a model name, or none (the guide alone); never the judge "
                            "of evaluate.py")
    group.add_argument("--critic-weight", type=float, default=defaults.critic_weight,
                       help="the critic's share of the meta-loss (1 = the critic alone)")
    group.add_argument("--anchor-lr", type=float, default=defaults.anchor_lr,
                       help="learning rate of the anchored blend weights (anchored)")
    group.add_argument("--anchor-limit", type=float, default=defaults.anchor_limit,
                       help="bound on every anchored blend weight (anchored, anchored-cma)")


def recipe_overrides(args: argparse.Namespace) -> dict:
    """The recipe values given on the command line."""
    names = ["size", "steps_per_stage", "lr", "tv_weight", "cutn", "quantize", "stages", "meta_steps"]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def run(main: Callable[[], int | None]) -> None:
    """Run a script's main: a `UserError` (or a full GPU) becomes one line on stderr and exit status 2."""
    import warnings

    # the clip package imports pkg_resources, which warns on every run; users cannot act on it
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    try:
        status = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except MemoryError:
        print("error: out of memory (try a smaller --size, --cutn or --batch-size)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except RuntimeError as error:
        if "out of memory" in str(error):
            print("error: out of GPU memory (try a smaller --size, --cutn or --batch-size)", file=sys.stderr)
            sys.exit(EXIT_USAGE)
        raise
    sys.exit(status or 0)
