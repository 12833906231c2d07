"""The layers of `core/`, bottom to top: a module may import modules of its own layer and of the layers
below it, never one above, and no import may close a cycle. The scripts sit on top of them all.

This table is the one place the layering is declared: `tests/test_layers.py` checks every module's imports
against it (and that docs/DESIGN.md shows `markdown()` of it); `python -m core.layers` prints that.
A new module gets a row here, in the lowest layer its imports allow.
"""
from __future__ import annotations

LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("leaves", "no project imports but other leaves: errors, limits, file helpers, losses, plain data and algorithms",
     ("errors", "limits", "interrupts", "safe_yaml", "files", "slugs", "losses", "schedule", "prompts",
      "prompt_lists", "image_ops", "scenes", "pixel_checks", "evolve", "cma", "genetic", "elitist_es", "summary",
      "adversarial", "html_pages", "plots", "layers", "prompt_splits", "other_scenes", "third_scenes", "scene_prompts",
      "ridge", "eval_summary", "scene_augment")),
    ("toolkit", "the registries of pluggable parts and their entries",
     ("registry", "drawers", "transforms", "constraints", "postproc")),
    ("models", "loading models: the CLIPs, the classifier judge, evaluate.py's judges",
     ("scenes_clip", "open_clip_models", "models", "critics", "classifier_judge", "classifier_judge_data", "judges")),
    ("render", "the pixel renderer, and what a bake's settings and stage targets are made of, and images drawn "
               "against a guide in training",
     ("render", "anchors", "auto", "bake_settings", "drawn_negatives")),
    ("bake", "meta-optimising a path's guides", ("meta_loss", "meta_optimisers", "bake")),
    ("store and files", "paths on disk, the store (and as people read it: listing, import), recipes, images, "
                        "reports, the gallery page, targets, tracking",
     ("paths", "store", "nearest", "claims", "recipes", "reference", "images", "report", "targets", "tracking",
      "store_view", "store_import", "gallery_page")),
    ("run pieces", "what the jobs are made of: the typed jobs, saving an image, batch sizes, bake reports, "
                   "the evaluation, the gallery's images", ("jobs", "output", "sizing", "bake_reports", "evaluate",
                                                            "gallery")),
    ("baking in one process", "bake prompts in batches and save them", ("baker",)),
    ("workers", "worker processes and Ray tasks that run the baker", ("processes", "ray_tasks")),
    ("jobs", "one job per script: normal, microwave, auto, bake, batch_bake, evaluate, bench, store",
     ("image_jobs", "bake_jobs", "evaluate_job", "bench", "store_jobs")),
    ("command line", "argparse: options into typed jobs; the scenes models' own commands",
     ("cli", "store_cli", "scenes_eval", "train_scenes_clip", "train_classifier_judge", "classifier_judge_eval",
      "guide_gap", "judge_shapes")),
)

# Imports allowed inside functions (elsewhere they hide a module's real dependencies): optional packages
# (open_clip and its hub client are imported only when an open_clip model is asked for),
# and `clip`, whose import takes seconds (torchvision) and warns, so it is paid only when a model is built.
LAZY_IMPORTS = ("ray", "wandb", "matplotlib", "open_clip", "huggingface_hub", "clip")

# The only functions allowed over 60 lines: optimiser loops documented step by step.
LONG_FUNCTIONS = ("cma.cma_es", "genetic.genetic")

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def layer_of() -> dict[str, int]:
    """Each module's layer, 0 at the bottom."""
    return {module: index for index, (_, _, modules) in enumerate(LAYERS) for module in modules}


def picture() -> str:
    """The layers as a picture in text, the scripts on top; every import points down it."""
    lines = ["scripts: bake.py microwave.py auto_microwave.py normal.py batch_bake.py evaluate.py bench.py store.py"]
    for index in reversed(range(len(LAYERS))):
        name, _, modules = LAYERS[index]
        lines += ["   ▼", f"{index + 1:>2} {name:<22} {' '.join(modules)}"]
    return "\n".join(lines)


def markdown() -> str:
    """The picture and the table as docs/DESIGN.md shows them, top layer first."""
    rows = ["```text", picture(), "```", "", "| layer | what | modules | each may import |", "|---|---|---|---|"]
    for index in reversed(range(len(LAYERS))):
        name, what, modules = LAYERS[index]
        allowed = "the other leaves" if index == 0 else \
            f"its own layer (no cycles) and layer{'s 1–' if index > 1 else ' '}{index}"
        rows.append(f"| {index + 1}. {name} | {what} | {', '.join(f'`{module}`' for module in modules)} | {allowed} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
