"""store.py's command line: a sub-command per job of `core.store_jobs` (list, show, rm, gallery, import), the
options they share taken from `jobs.RunOptions` (`--store`, `--out`, `--device`, `--seed`, `--quiet`), and the
parsed options turned into those typed jobs."""
from __future__ import annotations

import argparse
import textwrap

from core import cli
from core.gallery import OWN
from core.jobs import RunOptions
from core.models import MODEL_HELP
from core.store_jobs import GalleryJob, ImportJob, ListJob, RemoveJob, ShowJob
from core.store_view import SORT_KEYS

SORT_HELP = ("order of the paths: prompt, change (baked vs normal, the bakes that paid off most first), date "
             "(oldest first) or model; paths without a value come last")


def _sub(commands, name: str, help: str, description: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help, description=f"{help[:1].upper()}{help[1:]}.\n\n{textwrap.fill(description, 100)}",
                               formatter_class=cli.Formatter)


def _sorting(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sort", choices=SORT_KEYS, default="prompt", help=SORT_HELP)
    parser.add_argument("--reverse", action="store_true", help="the other way round")


def make_parser(description: str) -> cli.Parser:
    """store.py's parser: one sub-command per job."""
    parser = cli.Parser(description=description, formatter_class=cli.Formatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = _sub(commands, "list", "one line per stored path", "Prompt, model, stages, size, the baked vs normal "
                   "change of its held-out loss (negative: baking paid off) and date; a summary line at the end.")
    cli.add_flags(listing, RunOptions, ("store",))
    _sorting(listing)
    listing.add_argument("--model", help="only the paths baked with this model ('legacy': the original tool's)")
    listing.add_argument("--json", action="store_true", help="a JSON list of objects instead of the table")

    show = _sub(commands, "show", "one path in full", "Its recipe, metrics, and where its bake report is "
                "(looked for in OUT/reports/).")
    show.add_argument("item", metavar="PATH|PROMPT", help="a stored prompt, or a path file")
    cli.add_flags(show, RunOptions, ("store", "out"))

    remove = _sub(commands, "rm", "remove paths from the store", "Lists what it would remove; removes it only "
                  "with --yes. Only files of the store itself are removed (no links, nothing outside it).")
    remove.add_argument("items", nargs="+", metavar="PROMPT", help="stored prompts (or their files in the store)")
    cli.add_flags(remove, RunOptions, ("store",))
    remove.add_argument("--yes", action="store_true", help="really remove them")

    gallery = _sub(commands, "gallery", "one HTML page of the whole store", "Each path's final image, its change "
                   "and a link to its report, in OUT/gallery/. Paths without an image yet are replayed first (in "
                   "batches) and their images kept in STORE/.gallery/, so the next gallery replays only what is new.")
    cli.add_flags(gallery, RunOptions, ("store", "out", "device", "seed", "quiet"))
    gallery.add_argument("--model", default=OWN, help=f"'{OWN}': each path on the model it was baked with (legacy "
                         f"paths: ViT-B/32); or a model that replays the paths baked with it and the legacy paths "
                         f"of its embedding size. {MODEL_HELP}")
    gallery.add_argument("--batch-size", type=cli.int_at_least(1), default=8, help="paths replayed together")
    _sorting(gallery)
    cli.add_recipe_arguments(gallery)

    importing = _sub(commands, "import", "convert the original tool's path files", "Each bare-tensor file of DIR "
                     "is saved into the store in the current format (ViT-B/32, the original recipe); prompts "
                     "already there are skipped unless --overwrite; other files are skipped with a warning.")
    importing.add_argument("source", metavar="DIR", help="a folder of the original tool's .pt files")
    cli.add_flags(importing, RunOptions, ("store",))
    importing.add_argument("--overwrite", action="store_true", help="replace paths the store already has")
    return parser


def store_job(args: argparse.Namespace):
    """The parsed command line as its typed job."""
    if args.command == "list":
        return ListJob(args.store, sort=args.sort, reverse=args.reverse, model=args.model, json=args.json)
    if args.command == "show":
        return ShowJob(args.item, store=args.store, out=args.out)
    if args.command == "rm":
        return RemoveJob(list(args.items), store=args.store, yes=args.yes)
    if args.command == "gallery":
        return GalleryJob(args.store, out=args.out, model=args.model, device=args.device, seed=args.seed,
                          batch_size=args.batch_size, sort=args.sort, reverse=args.reverse, quiet=args.quiet,
                          recipe=cli.recipe_choice(args))
    return ImportJob(args.source, store=args.store, overwrite=args.overwrite)
