"""Rendering one image and saving it: the PNG (with its prompt, seed, model and recipe as metadata), the
recipe beside it, and optionally frames, a GIF and wandb logging. Nothing is overwritten."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import UserError
from core.files import write_new
from core.images import load_image, quantize as quantize_levels, save_gif, save_png
from core.jobs import ImageOptions, RunOptions
from core.models import Clip
from core.prompts import names_image_file
from core.recipes import recipe_to_yaml
from core.render import ProgressReporter, RenderSettings, draw, image_start, random_start, replay
from core.slugs import slugify
from core.tracking import Tracker


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


def make_output(run: RunOptions, image: ImageOptions, method: str, label: str, clip: Clip, recipe: dict,
                extra: dict | None = None) -> Output:
    """The output settings of a run: file stem `<method>-<slug>` (an image target's without its suffix:
    `normal-red-3fa4b2c1`) and the PNG metadata."""
    metadata = {"prompt": label, "method": method, "seed": run.seed, "model": clip.name,
                "recipe": json.dumps(recipe, sort_keys=True), **(extra or {})}
    if image.init:
        metadata["init"] = image.init
    slug = slugify(label)
    slug = slug[: -len(Path(slug).suffix)] if names_image_file(slug) else slug
    return Output(run.out, f"{method}-{slug}", metadata, recipe.get("quantize") or 0,
                  image.upscale, image.save_every, image.gif, image.init, recipe_to_yaml(recipe))


def final_image(settings: RenderSettings, pixels: torch.Tensor, quantize: int) -> torch.Tensor:
    """The drawer's parameters of one image -> the saved image [3,H,W]: clamped, optionally quantised to
    `quantize` levels."""
    image = draw(settings, pixels[None])[0]
    return quantize_levels(image, quantize) if quantize else image


def render_and_save(clip: Clip, stage_targets: torch.Tensor, settings: RenderSettings, seed: int,
                    output: Output, quiet: bool = False, tracker: Tracker | None = None) -> Path:
    """Replay stage targets [S, D] from the seed's random pixels and save the image (frames, GIF)."""
    frames: list[torch.Tensor] = []
    total = stage_targets.shape[0] * settings.steps_per_stage
    progress = ProgressReporter(total, output.stem[:40], enabled=not quiet)

    def on_step(step: int, pixels: torch.Tensor, losses: torch.Tensor) -> None:
        progress(step, pixels, losses)
        if tracker is not None:
            tracker.log_step(step, losses)
        if output.save_every and (step + 1) % output.save_every == 0:
            frame = final_image(settings, pixels[0].cpu(), output.quantize)
            if output.gif:  # kept only for the GIF (limits.check_output bounds them)
                frames.append(frame)
            save_png(frame, output.directory, f"{output.stem}-step{step + 1:05d}", output.metadata,
                     output.upscale)

    if output.init:
        start = image_start(settings, load_image(output.init, settings.size)[None]).to(clip.device)
    else:
        start = random_start(settings, [seed], clip.device)
    pixels = replay(clip, stage_targets[None].to(clip.device), settings, start, view_seed=seed, on_step=on_step)
    progress.close()
    if not bool(torch.isfinite(pixels).all()):
        raise UserError("the image diverged to non-finite values (NaN or infinity): nothing saved; try a smaller "
                        "--lr or weights")
    image = final_image(settings, pixels[0].detach().cpu(), output.quantize)
    file = save_png(image, output.directory, output.stem, output.metadata, output.upscale)
    if output.recipe_yaml:  # beside the image, under a name of its own: a leftover .yaml is never replaced
        write_new(file.parent, file.stem, ".yaml", lambda handle: handle.write(output.recipe_yaml.encode("utf-8")))
    if output.gif and frames:
        save_gif(frames + [image], output.directory, output.stem, output.upscale, duration_ms=120)
    if tracker is not None:
        tracker.log_image("image", image)
    return file
