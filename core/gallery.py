"""The gallery's images: each stored path replayed from one seed, as `microwave.py PATH --seed S` would, and
kept in the store (`<store>/.gallery/<file stem>-<key>.png`) so that the next gallery replays only what is new.

The key is a hash of the path file's bytes, the model, the seed and the render settings: a path baked again,
another seed or a recipe override gives a new image, and an unchanged path is never replayed twice. Paths
that need images are replayed in batches of paths with the same model, settings and stages (one `replay` of
P paths each; a path's image does not depend on its batch), under one progress bar.

Which model replays a path: with `model` "own", the one it was baked with (legacy paths: ViT-B/32), each
loaded once when first needed; with a model named, that model replays the paths baked with it and the
legacy paths of its embedding size, and the other paths show only an image made earlier (or a note).
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from core.errors import UserError
from core.images import save_png
from core.models import Clip, load_clip
from core.output import final_image
from core.paths import BakedPath
from core.render import RenderSettings, random_start, replay

GALLERY_DIR = ".gallery"
OWN = "own"  # each path on the model it was baked with


@dataclass
class Shot:
    """One path's gallery image: the model it is made with, how, and where it is kept; `note` says why a path
    has no image (then `image` is None)."""

    path: BakedPath
    model: str | None = None
    settings: RenderSettings | None = None
    quantize: int = 0
    image: Path | None = None  # the cached image file (it may not exist yet)
    replayable: bool = False  # its model is available to this run
    note: str = ""

    def key(self) -> tuple:
        """Paths with the same key replay together in one batch."""
        return self.model, json.dumps(asdict(self.settings), sort_keys=True, default=str), self.path.stages


def image_name(path: BakedPath, model: str, seed: int, settings: RenderSettings, quantize: int) -> str:
    """`<file stem>-<16 hex digits>.png`: the digits hash the path file's bytes, the model, seed and settings."""
    content = hashlib.sha256(path.file.read_bytes()).hexdigest()
    what = json.dumps({"file": content, "model": model, "seed": seed, "settings": asdict(settings),
                       "quantize": quantize}, sort_keys=True, default=str)
    return f"{path.file.stem}-{hashlib.sha256(what.encode('utf-8')).hexdigest()[:16]}.png"


def _model_for(path: BakedPath, model: str, clip: Clip | None) -> tuple[str | None, bool, str]:
    """(the model that makes this path's image, whether this run can replay with it, a note if not)."""
    if model == OWN:
        if path.model_name is None:
            return None, False, "the file does not name its model: run the gallery with --model NAME"
        return path.model_name, True, ""
    if path.model_name == clip.name or (path.legacy and path.embed_dim == clip.embed_dim):
        return clip.name, True, ""
    return path.model_name, False, (f"baked with {path.model_name} ({path.embed_dim}-dim): run the gallery with "
                                    f"--model own or --model {path.model_name} to see it")


def plan(paths: list[BakedPath], store: Path, model: str, clip: Clip | None, seed: int,
         recipe_of: Callable[[BakedPath], dict]) -> list[Shot]:
    """A shot per path: its model, settings (`recipe_of(path)`: the recipe it replays with) and cache file."""
    shots = []
    for path in paths:
        name, replayable, note = _model_for(path, model, clip)
        shot = Shot(path, name, replayable=replayable, note=note)
        if name is not None:
            try:
                recipe = recipe_of(path)
            except UserError as error:  # a path file with a broken recipe: no image, the others go on
                shot.replayable, shot.note = False, f"its recipe cannot be used: {error}"
            else:
                shot.settings, shot.quantize = RenderSettings.from_recipe(recipe), recipe.get("quantize") or 0
                shot.image = store / GALLERY_DIR / image_name(path, name, seed, shot.settings, shot.quantize)
        shots.append(shot)
    return shots


class Models:
    """The models of a gallery run, each loaded once; one that cannot be loaded is named once on stderr."""

    def __init__(self, device: str, clip: Clip | None = None):
        self.device = device
        self.loaded: dict[str, Clip | UserError] = {clip.name: clip} if clip is not None else {}

    def get(self, name: str) -> Clip:
        if name not in self.loaded:
            try:
                self.loaded[name] = load_clip(name, self.device)
            except UserError as error:
                print(f"warning: no images of the paths baked with {name}: {error}", file=sys.stderr)
                self.loaded[name] = error
        found = self.loaded[name]
        if isinstance(found, UserError):
            raise found
        return found


def _batches(shots: list[Shot], batch_size: int) -> list[list[Shot]]:
    """The shots to replay, grouped by model, settings and stages, in batches of at most `batch_size`."""
    groups: dict[tuple, list[Shot]] = {}
    for shot in shots:
        groups.setdefault(shot.key(), []).append(shot)
    return [group[first:first + batch_size] for group in groups.values()
            for first in range(0, len(group), batch_size)]


def _replay_batch(clip: Clip, batch: list[Shot], seed: int, on_step) -> None:
    """Replay a batch of paths (same model, settings, stages) from the seed and save each final image."""
    settings = batch[0].settings
    targets = torch.stack([shot.path.guides for shot in batch]).to(clip.device)
    start = random_start(settings, [seed] * len(batch), clip.device)
    pixels = replay(clip, targets, settings, start, view_seed=seed, on_step=on_step)
    for index, shot in enumerate(batch):
        image = final_image(settings, pixels[index].detach().cpu(), shot.quantize)
        save_png(image, shot.image.parent, shot.image.stem,
                 {"prompt": shot.path.prompt, "model": clip.name, "seed": seed, "path": shot.path.file.name})


def make_images(shots: list[Shot], models: Models, seed: int, batch_size: int = 8, quiet: bool = False) -> int:
    """Replay every replayable shot whose image is not in the cache yet; returns how many were made. A shot
    whose model cannot be loaded gets a note instead."""
    todo = [shot for shot in shots if shot.replayable and shot.image is not None and not shot.image.is_file()]
    batches = _batches(todo, batch_size)
    total = sum(batch[0].path.stages * batch[0].settings.steps_per_stage for batch in batches)
    made = 0
    with tqdm(total=total, desc=f"gallery: replaying {len(todo)} paths", unit="step", disable=quiet or not todo,
              dynamic_ncols=True) as bar:
        for batch in batches:
            try:
                clip = models.get(batch[0].model)
            except UserError as error:
                for shot in batch:
                    shot.note = f"no image: {error}"
                bar.update(batch[0].path.stages * batch[0].settings.steps_per_stage)
                continue
            for shot in batch:
                if shot.path.embed_dim != clip.embed_dim:
                    shot.note = f"{shot.path.embed_dim}-dim guides do not fit {clip.name}'s {clip.embed_dim}"
            fitting = [shot for shot in batch if not shot.note]
            if fitting:
                _replay_batch(clip, fitting, seed, lambda step, pixels, losses: bar.update(1))
            else:
                bar.update(batch[0].path.stages * batch[0].settings.steps_per_stage)
            made += len(fitting)
    return made
