"""The jobs of the scripts that render one image: normal.py, microwave.py and auto_microwave.py.

Each takes its typed job (`core.jobs`), loads the model, resolves the recipe, makes the stage targets and
renders and saves the image (`core.output`); the loops themselves live in `core.render`.
"""
from __future__ import annotations

import json

from core.auto import auto_targets, choose_mode, predict_paths
from core.files import check_writable_dir
from core.images import check_image_file
from core.jobs import AutoJob, ImageOptions, MicrowaveJob, NormalJob, RunOptions
from core.limits import check_output
from core.models import load_clip
from core.nearest import nearest_paths
from core.output import make_output, render_and_save
from core.paths import BakedPath, check_compatible, load_path
from core.recipes import RecipeChoice, load_recipe
from core.render import RenderSettings, blend
from core.store import list_paths
from core.targets import encode_target, target_label
from core.tracking import Tracker


def check_image_run(run: RunOptions, image: ImageOptions, recipe: dict, steps: int) -> None:
    """What can be checked before the model is loaded: the size of the saved image and of its GIF
    (`core.limits`), the --init image, and that --out can be written."""
    frames = steps // image.save_every + 1 if image.gif and image.save_every else 0
    check_output(recipe["size"], image.upscale, frames)
    if image.init:
        check_image_file(image.init)
    check_writable_dir(run.out, "--out")


def normal_job(job: NormalJob) -> None:
    """Optimise straight toward the prompt: the control."""
    recipe = job.recipe.resolve()
    check_image_run(job.run, job.image, recipe, job.steps or recipe["stages"] * recipe["steps_per_stage"])
    clip = load_clip(job.run.model, job.run.device, job.run.compile)
    embedding = encode_target(clip, job.prompt, job.run.truncate, recipe.get("targets", ""))
    settings = RenderSettings.from_recipe(recipe)
    # the same total steps as a microwave of a path with the recipe's stages, unless --steps says otherwise
    settings.steps_per_stage = job.steps if job.steps is not None else recipe["stages"] * settings.steps_per_stage
    output = make_output(job.run, job.image, "normal", target_label(job.prompt), clip,
                         {**recipe, "stages": 1, "steps_per_stage": settings.steps_per_stage})
    with Tracker(job.run.wandb, "normal", output.metadata) as tracker:
        file = render_and_save(clip, embedding[None], settings, job.run.seed, output, job.run.quiet, tracker)
    print(f"saved {file}")


def microwave_job(job: MicrowaveJob) -> None:
    """Replay a baked path, optionally blended with a new prompt."""
    path = load_path(job.path, device="cpu")
    recipe = job.recipe.resolve(base=path_recipe(path, job.recipe))
    check_image_run(job.run, job.image, recipe, path.stages * recipe["steps_per_stage"])
    clip = load_clip(job.run.model, job.run.device, job.run.compile)
    check_compatible(path, clip.embed_dim, clip.name)
    stage_targets = path.guides.to(clip.device)
    label = path.prompt
    if job.prompt:
        embedding = encode_target(clip, job.prompt, job.run.truncate, recipe.get("targets", ""))
        stage_targets = blend(stage_targets, embedding, job.mix)
        label = target_label(job.prompt)
    output = make_output(job.run, job.image, "microwave", label, clip, recipe,
                         {"path": str(job.path), "path_prompt": path.prompt})
    with Tracker(job.run.wandb, "microwave", output.metadata) as tracker:
        file = render_and_save(clip, stage_targets, RenderSettings.from_recipe(recipe), job.run.seed, output,
                               job.run.quiet, tracker)
    print(f"saved {file}")


def path_recipe(path: BakedPath, choice: RecipeChoice) -> dict:
    """A path's own recipe (legacy paths: the default recipe), unless a recipe is named."""
    if choice.name is not None or not path.recipe:
        return load_recipe(choice.name or "default")
    return {**load_recipe("default"), **path.recipe}


def auto_microwave_job(job: AutoJob) -> None:
    """Replay stage targets made from the k baked paths nearest to a new prompt (see `auto_targets`)."""
    recipe = job.recipe.resolve()
    check_image_run(job.run, job.image, recipe, recipe["stages"] * recipe["steps_per_stage"])
    clip = load_clip(job.run.model, job.run.device, job.run.compile)
    embedding = encode_target(clip, job.prompt, job.run.truncate, recipe.get("targets", ""))
    exclude = [job.prompt] if job.leave_out else []
    # the store is listed (one warning per bad file) only when predict may learn from it; the nearest search
    # lists it itself
    wanted = job.mode in (None, "predict")
    stored = [path for path in list_paths(job.run.store, clip.embed_dim) if path.prompt not in exclude] if wanted else []
    mode, notice = choose_mode(job.mode, stored, clip)
    if notice:
        print(notice)
    if mode == "predict":
        paths = predict_paths(stored, clip)
        print(f"predicting the stage offsets from {len(paths)} baked paths of {paths[0].stages} stages")
    else:
        paths = [path for path, _ in _nearest(job, clip, embedding, exclude)]
    stage_targets = auto_targets(clip, paths, embedding, mode, job.path_weight, job.run.seed)
    recipe["stages"] = stage_targets.shape[0]
    check_image_run(job.run, job.image, recipe, recipe["stages"] * recipe["steps_per_stage"])  # the paths' stages
    output = make_output(job.run, job.image, f"auto-{mode}", target_label(job.prompt), clip, recipe,
                         {"paths": json.dumps([path.prompt for path in paths])})
    with Tracker(job.run.wandb, "auto_microwave", output.metadata) as tracker:
        file = render_and_save(clip, stage_targets, RenderSettings.from_recipe(recipe), job.run.seed, output,
                               job.run.quiet, tracker)
    print(f"saved {file}")


def _nearest(job: AutoJob, clip, embedding, exclude: list[str]) -> list:
    """The job's `k` nearest baked paths with their distances, each checked and printed."""
    nearest = nearest_paths(job.run.store, clip.name, lambda texts: clip.encode_text(texts, truncate=True),
                            embedding.cpu(), job.k, exclude_prompts=exclude)
    for path, distance in nearest:
        print(f"using '{path.prompt}' (distance {distance:.4f})")  # nearest_paths gave only usable ones
    return nearest
