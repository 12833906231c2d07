"""Recipes: YAML files with the renderer's settings and its image-quality toolkit.

A recipe is a name (`original` is `recipes/original.yaml` in the repository) or a path to a YAML
file. Keys left out take the defaults below; command-line values that are given replace recipe
values. `views`, `constraints` and `postproc` are lists of toolkit entries (sections below);
without `views` the default chain is used. normal, microwave and auto_microwave save the resolved
recipe beside each image (`<image>.yaml`); a baked path keeps it in its file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from core.bake import BakeSettings
from core.constraints import build_constraints
from core.errors import UserError
from core.postproc import build_postproc
from core.registry import Param
from core.render import RenderSettings
from core.transforms import DEFAULT_VIEWS, build_chain

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

# The defaults are the settings dataclasses' own, declared once there.
_RENDER, _BAKE = RenderSettings(), BakeSettings()

RECIPE_PARAMS = (
    Param("size", _RENDER.size, "side of the rendered image in pixels", kind="int", minimum=8),
    Param("stages", _BAKE.stages, "number of stages (one guide target each)", kind="int", minimum=1),
    Param("steps_per_stage", _RENDER.steps_per_stage, "optimisation steps per stage", kind="int", minimum=1),
    Param("lr", _RENDER.lr, "learning rate of the pixel optimiser", kind="float", minimum=0),
    Param("weight_decay", _RENDER.weight_decay, "AdamW weight decay of the pixel optimiser",
          kind="float", minimum=0),
    Param("tv_weight", _RENDER.tv_weight, "weight of the total-variation loss (smoothness)",
          kind="float", minimum=0),
    Param("range_weight", _RENDER.range_weight, "weight of the penalty on pixels outside [0, 1]",
          kind="float", minimum=0),
    Param("cutn", _RENDER.cutn, "views per image per step", kind="int", minimum=1),
    Param("quantize", 0, "values per channel of the saved image (0: off)", kind="int", minimum=0),
    Param("meta_steps", _BAKE.meta_steps, "meta-optimisation steps (or generations) of a bake", kind="int",
          minimum=1),
    Param("targets", "", "weighted targets added to every prompt, e.g. 'text, words:-0.5 | pixel art:0.5'",
          kind="text"),
    Param("views", copy.deepcopy(DEFAULT_VIEWS), "transform chain (see Transforms)", kind="list"),
    Param("constraints", [], "constraints (see Constraints)", kind="list"),
    Param("postproc", [], "post-processing (see Post-processing)", kind="list"),
)

DEFAULT_RECIPE = {param.name: param.default for param in RECIPE_PARAMS}


def recipe_path(name_or_file: str | Path) -> Path:
    """The file of a recipe: a bare name is looked up in `recipes/`, anything else is a path."""
    text = str(name_or_file)
    path = Path(text).expanduser()
    if "/" not in text and "\\" not in text and not path.is_file():
        path = RECIPES_DIR / (text if path.suffix.lower() in (".yaml", ".yml") else f"{text}.yaml")
    if not path.is_file():
        known = ", ".join(sorted(item.stem for item in RECIPES_DIR.glob("*.yaml"))) or "none"
        raise UserError(f"recipe not found: {text} (recipes: {known}, or a path to a .yaml file)")
    return path


def load_recipe(name_or_file: str | Path | None = None) -> dict:
    """The validated recipe `name_or_file` (None: the defaults), missing keys filled with defaults."""
    if name_or_file is None:
        return validate_recipe(copy.deepcopy(DEFAULT_RECIPE))
    path = recipe_path(name_or_file)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"recipe {path} is not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise UserError(f"recipe {path} must be a mapping of settings, got {type(loaded).__name__}")
    recipe = copy.deepcopy(DEFAULT_RECIPE)
    recipe.update(loaded)
    return validate_recipe(recipe, source=str(path))


def merge_overrides(recipe: dict, overrides: dict) -> dict:
    """A copy of `recipe` where every override that is not None replaces the recipe value, validated."""
    merged = copy.deepcopy(recipe)
    for key, value in overrides.items():
        if value is not None:
            merged[key] = value
    return validate_recipe(merged)


def validate_recipe(recipe: dict, source: str = "recipe") -> dict:
    """Check every key and toolkit entry (UserError on the first problem); returns the parsed recipe.

    Numbers given as strings are converted; unknown keys, entries or parameters are errors naming
    the valid ones.
    """
    if not isinstance(recipe, dict):
        raise UserError(f"{source} must be a mapping of settings")
    known = [param.name for param in RECIPE_PARAMS]
    unknown = [key for key in recipe if key not in known]
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r}; valid: {', '.join(known)}")
    parsed: dict[str, Any] = {}
    for param in RECIPE_PARAMS:
        raw = recipe.get(param.name, param.default)
        value = param.parse(param.default if raw is None else raw, source)
        if param.kind not in ("list", "text") and not isinstance(value, (int, float)):
            raise UserError(f"{source}: {param.name} expects {param.describe()}, got {raw!r}")
        parsed[param.name] = value
    if parsed["quantize"] == 1:
        raise UserError(f"{source}: quantize needs at least 2 values per channel (or 0 for off)")
    total_steps = parsed["stages"] * parsed["steps_per_stage"]
    # Building the toolkit parses every entry, so all their errors surface here, before any work.
    build_chain(parsed["views"], 224, total_steps)
    build_constraints(parsed["constraints"], total_steps)
    build_postproc(parsed["postproc"], total_steps)
    return parsed


def recipe_to_yaml(recipe: dict) -> str:
    """The recipe as YAML text, to save beside the images it made (tuples written as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    return yaml.safe_dump(plain(recipe), sort_keys=False, default_flow_style=None)
