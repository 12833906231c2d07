"""From the command line to a job: the options every script shares, the flags derived from the settings
dataclasses, parsed options turned into typed jobs (`core.jobs`), and user mistakes turned into one line.

Option names are declared once, in the settings: every field of `RenderSettings` and `BakeSettings` that
has `help` metadata is a flag (`--meta-lr` from `meta_lr`); a recipe key's flag overrides the recipe's
value. Nothing below this module sees argparse: the scripts parse, `*_job(args)` builds the job, and the
job modules take only that.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import signal
import sys
import types
import typing
import warnings
from typing import Callable

from core.bake_settings import BakeSettings
from core.constraints import CONSTRAINTS
from core.drawers import DRAWERS
from core.errors import QUOTE_LIMIT, UserError, one_line, quote
from core.files import disk_full_message, is_disk_full
from core.interrupts import EXIT_INTERRUPTED
from core.jobs import (AutoJob, BakeJob, BenchJob, EvaluateJob, ImageOptions, MicrowaveJob, NormalJob,
                       RunOptions)
from core.limits import MAX_BATCH
from core.meta_optimisers import META_OPTIMIZERS
from core.postproc import POSTPROC
from core.recipes import FLAG_PARAMS, RecipeChoice
from core.registry import Param
from core.sizing import AUTO
from core.transforms import TRANSFORMS

EXIT_USAGE = 2
# The default of a flag whose absence means "choose for me": left out of the parsed options (read them with
# getattr(args, name, None)), and no "(default: None)" in --help.
NOT_GIVEN = argparse.SUPPRESS

_TYPES = {"int": int, "float": float, "text": str, "entry": str}

# Settings fields whose values are names from a registry: the flag offers those names (with their docs).
CHOICES = {"meta": {name: doc for name, (_, doc) in META_OPTIMIZERS.items()}}


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, keep the description's line breaks."""

    def _get_help_string(self, action):
        # A switch that turns something off (--no-report) says in its help what happens without it;
        # "(default: True)" would read as if the switch were on by default.
        if action.nargs == 0 and action.default is True:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit 2 (argparse's own convention); a long word the
    user typed (an unknown option, a bad choice) is cut to about 80 characters."""

    def error(self, message: str):
        message = re.sub(r"\S{%d,}" % (QUOTE_LIMIT + 1), lambda match: match.group()[:QUOTE_LIMIT] + "...", message)
        print(one_line(f"{self.prog}: error: {message}"), file=sys.stderr)
        sys.exit(EXIT_USAGE)


# --- argparse types ----------------------------------------------------------------------------------

def _bounds(minimum: float | None, maximum: float | None) -> str:
    def number(value: float) -> str:  # whole numbers in full (4294967295, not 4.29497e+09)
        return str(int(value)) if float(value).is_integer() else f"{value:g}"

    if minimum is not None and maximum is not None:
        return f"{number(minimum)} to {number(maximum)}"
    return f"at least {number(minimum)}" if minimum is not None else f"at most {number(maximum)}"


def int_in_range(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number within [`minimum`, `maximum`] (either may be None), so a bad or
    absurd count is a one-line error before any work, not a traceback or an allocation in the middle of it."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also a number of more than 4,300 digits
            raise argparse.ArgumentTypeError(f"expected a whole number, got {quote(text)}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {_bounds(minimum, maximum)}, got {quote(text, 20)}")
        return value

    return parse


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum`."""
    return int_in_range(minimum, None)


def finite_float(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number (not nan, not inf) within [`minimum`, `maximum`] (either may be None)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {quote(text)}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {quote(text)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {_bounds(minimum, maximum)}, got {quote(text, 20)}")
        return value

    return parse


def batch_size_arg(text: str) -> int | str:
    """argparse type of `--batch-size`: `auto` or a number of prompts (1 to MAX_BATCH)."""
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of prompts, got {quote(text)}") from None
    if not 1 <= value <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"the batch size must be 1 to {MAX_BATCH}, got {quote(text, 20)}")
    return value


def counts_arg(text: str) -> list[int]:
    """argparse type of bench's `--prompts`: `1,8,64` -> [1, 8, 64] (each 1 to MAX_BATCH)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1 or max(values) > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected numbers of prompts (1 to {MAX_BATCH}) like 1,8,64, "
                                         f"got {quote(text)}")
    return values


def bake_prompts_arg(text: str) -> int | str:
    """argparse type of bench's `--bake-prompts`: `auto`, or a number of prompts (0 skips the bake)."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of prompts (0 to {MAX_BATCH}), "
                                         f"got {quote(text)}")
    return int(text)


# --- parsers -----------------------------------------------------------------------------------------

def toolkit_epilog() -> str:
    """The drawers, transforms, constraints and post-processing a recipe can use, listed from their registries."""
    parts = [f"{registry.title} (recipe key '{key}'):\n" + "\n".join(f"  {line}" for line in registry.help_text().splitlines())
             for key, registry in (("drawer", DRAWERS), ("views", TRANSFORMS), ("constraints", CONSTRAINTS),
                                   ("postproc", POSTPROC))]
    return "\n\n".join(parts) + "\n\nFull reference: docs/reference.md"


def make_parser(description: str, recipe: bool = True, outputs: bool = True) -> Parser:
    """A parser with the options every script takes (model, device, seed, out, store, ...).

    `recipe`: also the recipe options; `outputs`: also those of scripts that make images or paths
    (seed, out, store, truncate, wandb), which a benchmark has no use for.
    """
    parser = Parser(description=description, formatter_class=Formatter,
                    epilog=toolkit_epilog() if recipe else None)
    add_flags(parser, RunOptions, None if outputs else ("model", "device", "quiet", "compile"))
    if recipe:
        add_recipe_arguments(parser)
    return parser


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_recipe_arguments(parser: argparse.ArgumentParser, flags: tuple[Param, ...] = FLAG_PARAMS) -> None:
    """`--recipe` and a flag for each of `flags` (the recipe's numbers and texts but the bake's,
    `recipes.FLAG_PARAMS`); a flag given replaces the recipe's value, which the recipe then checks."""
    group = parser.add_argument_group("recipe (overrides the values of --recipe)")
    # No argparse defaults, so that an explicit `--recipe default` can override a path's own recipe, and
    # a value not given on the command line is the recipe's.
    group.add_argument("--recipe", default=argparse.SUPPRESS,
                       help="a recipe name in recipes/ or a YAML file (default: 'default'; microwave.py: the "
                            "recipe its path was baked with)")
    for param in flags:
        group.add_argument(_flag(param.name), type=_typed(_TYPES[param.kind], param.minimum, param.maximum),
                           default=argparse.SUPPRESS, help=f"{param.doc}{_range_help(param.minimum, param.maximum)} "
                                                           f"(default: the recipe's; {param.default} in the default "
                                                           f"recipe)")


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the scripts that render one image (normal.py, microwave.py, auto_microwave.py): `ImageOptions`."""
    add_flags(parser.add_argument_group("the image"), ImageOptions)


def add_bake_arguments(parser: argparse.ArgumentParser, settings: type = BakeSettings) -> None:
    """Options of a bake (bake.py, batch_bake.py, and evaluate.py for the paths it bakes first): a flag for
    every field of the bake settings with `help`, and --no-report."""
    group = parser.add_argument_group("baking")
    add_flags(group, settings)
    group.add_argument("--no-report", dest="report", action="store_false",
                       help="skip the HTML report of each bake (images per stage, loss curves, GIF); "
                            "by default one is written to OUT/reports/")


def add_flags(group, options: type, names: tuple[str, ...] | None = None) -> None:
    """A flag for every field of the dataclass `options` that has `help` metadata (of `names`, if given):
    `--steps-per-stage` from `steps_per_stage`."""
    hints = typing.get_type_hints(options)
    for item in dataclasses.fields(options):
        if "help" in item.metadata and (names is None or item.name in names):
            group.add_argument(_flag(item.name), **_setting_flag(item, _plain_type(hints[item.name])))


def _plain_type(hint) -> type:
    """`int` of `int`, and of `int | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        given = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return given[0] if len(given) == 1 else object
    return hint


def _setting_flag(item: dataclasses.Field, kind: type) -> dict:
    """argparse keywords of a field's flag: its type (a minimum checked at once; a bool is a switch), choices,
    help and default (a recipe key's flag has none: the recipe's value stands unless it is given)."""
    keywords: dict = {"help": item.metadata["help"]}
    if kind is bool:
        return {**keywords, "action": "store_true", "default": item.default}
    minimum, maximum = item.metadata.get("minimum"), item.metadata.get("maximum")
    keywords["type"] = _typed(kind, minimum, maximum)
    keywords["help"] += _range_help(minimum, maximum)
    if item.name in CHOICES:
        keywords["choices"] = list(CHOICES[item.name])
        keywords["help"] += ": " + "; ".join(f"{name}: {doc}" for name, doc in CHOICES[item.name].items())
    if item.metadata.get("recipe"):
        keywords["default"] = argparse.SUPPRESS
        keywords["help"] += f" (default: the recipe's; {item.default} in the default recipe)"
    else:
        keywords["default"] = item.default
    return keywords


def _typed(kind: type, minimum: float | None, maximum: float | None) -> Callable[[str], object]:
    """The argparse type of a setting: whole numbers and finite numbers within their bounds, or text."""
    if kind is int:
        return int_in_range(minimum, maximum)
    if kind is float:
        return finite_float(minimum, maximum)
    return str


def _range_help(minimum: float | None, maximum: float | None) -> str:
    """What --help says of a setting's bounds, where it has a maximum (a limit the user may meet)."""
    return f" ({_bounds(minimum, maximum)})" if maximum is not None else ""


# --- parsed options -> jobs --------------------------------------------------------------------------

def run_options(args: argparse.Namespace) -> RunOptions:
    """The options every run shares (those a script does not take keep their defaults)."""
    given = {item.name: getattr(args, item.name) for item in dataclasses.fields(RunOptions) if hasattr(args, item.name)}
    return RunOptions(**given)


def recipe_choice(args: argparse.Namespace, flags: tuple[Param, ...] = FLAG_PARAMS,
                  settings: type = BakeSettings) -> RecipeChoice:
    """`--recipe` (None when not given) and the recipe values given as flags, bake ones included."""
    names = [param.name for param in flags] + [item.name for item in dataclasses.fields(settings)
                                               if item.metadata.get("recipe")]
    return RecipeChoice(getattr(args, "recipe", None), {name: getattr(args, name) for name in names
                                                        if getattr(args, name, None) is not None})


def image_options(args: argparse.Namespace) -> ImageOptions:
    """How the image scripts save their image (--init, --save-every, --gif, --upscale)."""
    return ImageOptions(**{item.name: getattr(args, item.name) for item in dataclasses.fields(ImageOptions)})


def bake_settings(args: argparse.Namespace, settings: type = BakeSettings) -> BakeSettings:
    """The bake options given; those that are recipe keys are not among them (`recipe_choice` has them, and
    the job takes them from the resolved recipe)."""
    return settings(**{item.name: getattr(args, item.name) for item in dataclasses.fields(settings)
                       if hasattr(args, item.name) and not item.metadata.get("recipe")})


def normal_job(args: argparse.Namespace) -> NormalJob:
    """normal.py's command line as a job."""
    return NormalJob(args.prompt, run=run_options(args), recipe=recipe_choice(args), image=image_options(args),
                     steps=args.steps)


def microwave_job(args: argparse.Namespace) -> MicrowaveJob:
    """microwave.py's command line (`[PROMPT] PATH`, --mix) as a job."""
    prompt, path = args.items if len(args.items) == 2 else (None, args.items[0])
    return MicrowaveJob(path, prompt=prompt, mix=args.mix, run=run_options(args), recipe=recipe_choice(args),
                        image=image_options(args))


def auto_job(args: argparse.Namespace) -> AutoJob:
    """auto_microwave.py's command line as a job."""
    return AutoJob(args.prompt, k=args.k, mode=getattr(args, "mode", None), path_weight=args.path_weight, leave_out=args.leave_out,
                   run=run_options(args), recipe=recipe_choice(args), image=image_options(args))


def bake_job(args: argparse.Namespace) -> BakeJob:
    """bake.py's (one prompt, --overwrite) or batch_bake.py's (prompts, files, workers) command line as a job."""
    if hasattr(args, "prompt"):  # bake.py: this one prompt, baked again only with --overwrite
        return BakeJob([args.prompt], run=run_options(args), recipe=recipe_choice(args), bake=bake_settings(args),
                       batch_size=1, report=args.report, overwrite=args.overwrite, skip_existing=False)
    return BakeJob(list(args.prompts), run=run_options(args), recipe=recipe_choice(args), bake=bake_settings(args),
                   batch_size=args.batch_size, report=args.report, gpus=args.gpus, ray=args.ray,
                   claim_ttl=args.claim_ttl)


def evaluate_job(args: argparse.Namespace) -> EvaluateJob:
    """evaluate.py's command line as a job."""
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    judges = [judge.strip() for judge in args.judge.split(",") if judge.strip()]
    return EvaluateJob(args.prompts_file, judges=judges, seeds=args.seeds, methods=methods, k=args.k,
                       auto_mode=getattr(args, "auto_mode", None), path_weight=args.path_weight, store_prompts=args.store_prompts,
                       batch_size=args.batch_size, report=args.report, run=run_options(args),
                       recipe=recipe_choice(args), bake=bake_settings(args))


def bench_job(args: argparse.Namespace) -> BenchJob:
    """bench.py's command line as a job."""
    fields = {item.name for item in dataclasses.fields(BenchJob)}
    return BenchJob(**{name: value for name, value in vars(args).items() if name in fields})


# --- running -----------------------------------------------------------------------------------------

def run(main: Callable[[], int | None]) -> None:
    """Run a script's main and exit: 0, or the status it returns (batch_bake.py: 1 when a prompt failed or a
    worker died); a `UserError`, a full disk or running out of memory is one line on stderr and exit status
    2; Ctrl-C is "interrupted" and exit status 130 (128 + SIGINT, the shell's convention)."""
    # the clip package imports pkg_resources, which warns on every run; users cannot act on it
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on Ctrl-C unwinds (claims released)
    try:
        status = main()
    except UserError as error:
        _exit_with(f"error: {error}", EXIT_USAGE)
    except KeyboardInterrupt:
        _exit_with("interrupted", EXIT_INTERRUPTED)
    except MemoryError:
        _exit_with("error: out of memory (try a smaller --size, --cutn or --batch-size)", EXIT_USAGE)
    except OSError as error:
        if not is_disk_full(error):
            raise
        _exit_with(f"error: {disk_full_message(error)}", EXIT_USAGE)
    except RuntimeError as error:
        if is_disk_full(error):
            _exit_with(f"error: {disk_full_message(error)}", EXIT_USAGE)
        if "out of memory" in str(error):
            _exit_with("error: out of GPU memory (try a smaller --size, --cutn or --batch-size)", EXIT_USAGE)
        raise
    sys.exit(status or 0)


def _exit_with(line: str, status: int) -> None:
    print(one_line(line), file=sys.stderr)
    sys.exit(status)
