"""The jobs behind the image scripts: normal, microwave, auto_microwave, evaluate (baking: `core.batch`).

Each `*_job(args)` takes the parsed command line of its script and does the whole job; the loops
themselves live in `core.render` (inner) and `core.bake` (meta).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from core.auto import auto_targets
from core.bake import BakeSettings
from core.cli import recipe_overrides
from core.errors import UserError
from core.models import Clip, load_clip, model_name, resolve_critic
from core.prompts import names_image_file
from core.render import ProgressReporter, RenderSettings, blend, from_image, random_pixels, replay, to_image
from core.tracking import tracker_for

# --- targets -----------------------------------------------------------------------------------------

def encode_target(clip: Clip, text: str, truncate: bool = False, extra: str = "") -> torch.Tensor:
    """The unit embedding [D] of a target: text, an image file, or weighted targets (`a:1 | b:-0.5`).

    `extra` (a recipe's `targets`) adds weighted targets to it.
    """
    from core.prompts import combine_targets, parse_targets

    if not text or not text.strip():
        raise UserError("empty prompt")
    if _is_one_image(text):
        if not Path(text).is_file():
            raise UserError(f"image file not found: {text}")
        if not extra:
            return encode_image_files(clip, [text])[0]
    targets = parse_targets(f"{text} | {extra}" if extra else text)
    embeddings = []
    for target in targets:
        if target.kind == "image":
            embeddings.append(encode_image_files(clip, [target.value])[0])
        else:
            embeddings.append(clip.encode_text([target.value], truncate)[0])
    combined = combine_targets(torch.stack(embeddings), torch.tensor([t.weight for t in targets]))
    return torch.nn.functional.normalize(combined.to(clip.device), dim=-1)


def encode_image_files(clip: Clip, files: list[str]) -> torch.Tensor:
    """Unit-norm embeddings [N, D] of image files (a target given as an image)."""
    from core.images import load_image

    images = torch.stack([load_image(file, clip.image_size) for file in files]).to(clip.device)
    with torch.no_grad():
        return torch.nn.functional.normalize(clip.encode_images(images), dim=-1)


def target_label(text: str) -> str:
    """What a target is called in file names and logs (an image target by its file name)."""
    return Path(text).stem if _is_one_image(text) else text.strip()


def _is_one_image(text: str) -> bool:
    """Whether a target is one image file alone (not weighted targets that include one)."""
    return names_image_file(text) and "|" not in text


# --- recipes -----------------------------------------------------------------------------------------

def resolve_recipe(args: argparse.Namespace, base: dict | None = None) -> dict:
    """The recipe of a run: `--recipe` (or `base`, e.g. a path's own recipe), then command-line overrides."""
    from core.recipes import load_recipe, merge_overrides, validate_recipe

    recipe = dict(base) if base is not None else load_recipe(getattr(args, "recipe", "default"))
    recipe = merge_overrides(recipe, recipe_overrides(args))
    validate_recipe(recipe)
    return recipe


def bake_settings(recipe: dict, args: argparse.Namespace) -> BakeSettings:
    """The meta part of a run from the recipe and the bake options on the command line."""
    settings = BakeSettings(**{key: recipe[key] for key in ("stages", "meta_steps") if key in recipe})
    for name in ("meta", "meta_lr", "unroll", "starts", "prompt_pull", "eval_starts",
                 "population", "sigma", "trust_angle", "meta_views", "anchor_lr", "anchor_limit", "critic", "critic_weight"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(settings, name, value)
    return settings


# --- rendering and saving ----------------------------------------------------------------------------

@dataclass
class Output:
    """Where and how a run's image is saved."""

    directory: str
    stem: str
    metadata: dict
    quantize: int = 0
    upscale: int = 4
    save_every: int = 0
    gif: bool = False
    init: str | None = None  # an image to start from instead of random pixels
    recipe_yaml: str = ""  # written beside the image so the result can be reproduced


def final_image(pixels: torch.Tensor, quantize: int) -> torch.Tensor:
    """Raw pixels [3,H,W] -> the saved image: clamped, optionally quantised to `quantize` levels."""
    from core.images import quantize as quantize_levels

    image = to_image(pixels).clamp(0, 1)
    return quantize_levels(image, quantize) if quantize else image


def render_and_save(clip: Clip, stage_targets: torch.Tensor, settings: RenderSettings, seed: int,
                    output: Output, quiet: bool = False, tracker=None) -> Path:
    """Replay stage targets [S, D] from the seed's random pixels and save the image (frames, GIF)."""
    from core.files import unique_path, write_atomically
    from core.images import save_gif, save_png

    frames: list[torch.Tensor] = []
    total = stage_targets.shape[0] * settings.steps_per_stage
    progress = ProgressReporter(total, output.stem[:40], enabled=not quiet)

    def on_step(step: int, pixels: torch.Tensor, losses: torch.Tensor) -> None:
        progress(step, pixels, losses)
        if tracker is not None:
            tracker.log_step(step, losses)
        if output.save_every and (step + 1) % output.save_every == 0:
            frame = final_image(pixels[0].cpu(), output.quantize)
            frames.append(frame)
            save_png(frame, output.directory, f"{output.stem}-step{step + 1:05d}", output.metadata,
                     output.upscale)

    if output.init:
        from core.images import load_image

        start = from_image(load_image(output.init, settings.size))[None].to(clip.device)
    else:
        start = random_pixels([seed], settings.size, clip.device)
    pixels = replay(clip, stage_targets[None].to(clip.device), settings, start, view_seed=seed, on_step=on_step)
    progress.close()
    image = final_image(pixels[0].detach().cpu(), output.quantize)
    file = save_png(image, output.directory, output.stem, output.metadata, output.upscale)
    if output.recipe_yaml:  # beside the image, under a name of its own: a leftover .yaml is never replaced
        write_atomically(unique_path(file.parent, file.stem, ".yaml"),
                         lambda handle: handle.write(output.recipe_yaml.encode()))
    if output.gif and frames:
        save_gif(frames + [image], output.directory, output.stem, output.upscale, duration_ms=120)
    if tracker is not None:
        tracker.log_image("image", image)
    return file


def make_output(args: argparse.Namespace, method: str, label: str, clip: Clip, recipe: dict,
                extra: dict | None = None) -> Output:
    """The output settings of a run: file stem `<method>-<slug>` and the PNG metadata."""
    from core.recipes import recipe_to_yaml
    from core.slugs import slugify

    metadata = {"prompt": label, "method": method, "seed": args.seed, "model": clip.name,
                "recipe": json.dumps(recipe, sort_keys=True), **(extra or {})}
    if args.init:
        metadata["init"] = args.init
    return Output(args.out, f"{method}-{slugify(label)}", metadata, recipe.get("quantize") or 0,
                  args.upscale, args.save_every, args.gif, args.init, recipe_to_yaml(recipe))


# --- the jobs ----------------------------------------------------------------------------------------

def normal_job(args: argparse.Namespace) -> None:
    """Optimise straight toward the prompt: the control."""
    clip = load_clip(args.model, args.device, getattr(args, "compile", False))
    recipe = resolve_recipe(args)
    embedding = encode_target(clip, args.prompt, args.truncate, recipe.get("targets", ""))
    settings = RenderSettings.from_recipe(recipe)
    # the same total steps as a microwave of a path with the recipe's stages, unless --steps says otherwise
    settings.steps_per_stage = args.steps if args.steps is not None else recipe["stages"] * settings.steps_per_stage
    output = make_output(args, "normal", target_label(args.prompt), clip, {**recipe, "stages": 1,
                                                                         "steps_per_stage": settings.steps_per_stage})
    with tracker_for(args, "normal", output.metadata) as tracker:
        file = render_and_save(clip, embedding[None], settings, args.seed, output, args.quiet, tracker)
    print(f"saved {file}")


def microwave_job(args: argparse.Namespace) -> None:
    """Replay a baked path, optionally blended with a new prompt."""
    from core.paths import check_compatible, load_path

    clip = load_clip(args.model, args.device, getattr(args, "compile", False))
    path = load_path(args.path, device="cpu")
    check_compatible(path, clip.embed_dim, clip.name)
    recipe = resolve_recipe(args, base=_path_recipe(path, args))
    stage_targets = path.guides.to(clip.device)
    label = path.prompt
    if args.prompt:
        embedding = encode_target(clip, args.prompt, args.truncate, recipe.get("targets", ""))
        stage_targets = blend(stage_targets, embedding, args.mix)
        label = target_label(args.prompt)
    output = make_output(args, "microwave", label, clip, recipe, {"path": str(args.path), "path_prompt": path.prompt})
    with tracker_for(args, "microwave", output.metadata) as tracker:
        file = render_and_save(clip, stage_targets, RenderSettings.from_recipe(recipe), args.seed, output,
                               args.quiet, tracker)
    print(f"saved {file}")


def _path_recipe(path, args: argparse.Namespace) -> dict:
    """A path's own recipe (legacy paths: the default recipe), unless --recipe is given."""
    from core.recipes import load_recipe

    if hasattr(args, "recipe") or not path.recipe:
        return load_recipe(getattr(args, "recipe", "default"))
    return {**load_recipe("default"), **path.recipe}


def auto_microwave_job(args: argparse.Namespace) -> None:
    """Replay stage targets made from the k baked paths nearest to a new prompt (see `auto_targets`)."""
    from core.nearest import nearest_paths

    clip = load_clip(args.model, args.device, getattr(args, "compile", False))
    recipe = resolve_recipe(args)
    embedding = encode_target(clip, args.prompt, args.truncate, recipe.get("targets", ""))
    exclude = [args.prompt] if args.leave_out else []
    nearest = nearest_paths(args.store, clip.name, lambda texts: clip.encode_text(texts, truncate=True),
                            embedding.cpu(), args.k, exclude_prompts=exclude)
    for path, distance in nearest:
        if path.embed_dim != clip.embed_dim:
            raise UserError(f"path '{path.prompt}' has embed dim {path.embed_dim}, model {clip.name} has "
                            f"{clip.embed_dim}")
        print(f"using '{path.prompt}' (distance {distance:.4f})")
    stage_targets = auto_targets(clip, [path for path, _ in nearest], embedding, args.mode, args.path_weight,
                                 args.seed)
    recipe["stages"] = stage_targets.shape[0]
    output = make_output(args, f"auto-{args.mode}", target_label(args.prompt), clip, recipe,
                         {"paths": json.dumps([path.prompt for path, _ in nearest])})
    with tracker_for(args, "auto_microwave", output.metadata) as tracker:
        file = render_and_save(clip, stage_targets, RenderSettings.from_recipe(recipe), args.seed, output,
                               args.quiet, tracker)
    print(f"saved {file}")


def evaluate_job(args: argparse.Namespace) -> None:
    """normal vs microwave vs auto_microwave at equal budget, scored by a judge that did not guide."""
    from core.batch import bake_many, read_prompts
    from core.evaluate import METHODS, evaluate
    from core.files import unique_dir
    from core.store import find_path

    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        raise UserError(f"unknown method(s) {', '.join(unknown) or '(none given)'} in --methods; "
                        f"choose from {', '.join(METHODS)}")
    prompts = read_prompts([args.prompts_file])
    if not prompts:
        raise UserError(f"no prompts in {args.prompts_file}")
    clip = load_clip(args.model, args.device, getattr(args, "compile", False))
    judge = load_clip(args.judge, args.device)
    if judge.name == clip.name:
        raise UserError(f"the judge must be another model than the guide ({clip.name})")
    critic = resolve_critic(getattr(args, "critic", "none"), clip.name)
    if critic and model_name(critic) == judge.name:  # compared by name: no need to load the critic twice
        raise UserError(f"the judge ({judge.name}) must not also be the bake's critic: it would not be held out")
    recipe = resolve_recipe(args)
    store_prompts = []
    if getattr(args, "store_prompts", None):
        if not Path(args.store_prompts).is_file():
            raise UserError(f"store prompts file not found: {args.store_prompts}")
        store_prompts = read_prompts([args.store_prompts])
    wanted = prompts + [prompt for prompt in store_prompts if prompt not in prompts]
    missing = [prompt for prompt in wanted if find_path(args.store, prompt) is None]
    if missing and {"microwave", "auto"} & set(methods):
        print(f"baking {len(missing)} prompt(s) missing from {args.store} first")
        args.overwrite = False
        summary = bake_many(missing, args, batch_size=args.batch_size, skip_existing=True)
        if summary.failed:
            raise UserError(f"could not bake {summary.failed[0][0]!r}: {summary.failed[0][1]}")
    out_dir = unique_dir(args.out, "evaluation")
    evaluation = evaluate(clip, judge, prompts, RenderSettings.from_recipe(recipe), recipe["stages"], args.store,
                          args.seeds, methods, out_dir, k=args.k, path_weight=args.path_weight, quiet=args.quiet,
                          auto_mode=args.auto_mode)
    print(evaluation.summary_markdown())
    print(f"images, results.csv and index.html in {out_dir}")
