"""Recipes: YAML files with the renderer's settings and its image-quality toolkit.

A recipe is a name (`original` is `recipes/original.yaml` in the repository) or a path to a YAML
file. Keys left out take the defaults below; command-line values that are given replace recipe
values. `views`, `constraints` and `postproc` are lists of toolkit entries (sections below);
without `views` the default chain is used. normal, microwave and auto_microwave save the resolved
recipe beside each image (`<image>.yaml`); a baked path keeps it in its file.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.bake_settings import BakeSettings, recipe_fields
from core.constraints import build_constraints
from core.errors import UserError
from core.postproc import build_postproc
from core.registry import Param
from core.render import RenderSettings
from core.transforms import build_chain

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

# Recipe keys that belong to no settings dataclass: how the saved image is quantised, what every prompt adds.
OUTPUT_PARAMS = (Param("quantize", 0, "colour levels per channel of the saved image (16 = the original's "
                                      "pixel-art look; 0 = off)", kind="int", minimum=0),)
TARGET_PARAMS = (Param("targets", "", "weighted targets added to every prompt, e.g. 'text, words:-0.5 | "
                                      "pixel art:0.5'", kind="text"),)
# The order recipes are written in (the YAML beside an image, errors listing the keys); keys added later
# follow in the order they are declared.
KEY_ORDER = ("size", "stages", "steps_per_stage", "lr", "weight_decay", "tv_weight", "range_weight", "cutn",
             "quantize", "meta_steps", "targets", "views", "constraints", "postproc")
_KINDS = {int: "int", float: "float", str: "text", bool: "bool"}


def _param(item: dataclasses.Field, hints: dict) -> Param:
    """A recipe key from a settings field: its default, its `help` and `minimum` metadata, its type."""
    kind = _KINDS.get(hints[item.name], "list")
    if "recipe_default" in item.metadata:
        default = copy.deepcopy(item.metadata["recipe_default"])
    elif item.default is not dataclasses.MISSING:
        default = item.default
    else:
        default = item.default_factory()
    return Param(item.name, default, item.metadata["help"], kind=kind, minimum=item.metadata.get("minimum"))


def _settings_params() -> list[Param]:
    """The recipe keys the settings dataclasses declare: every field of `RenderSettings`, and the fields
    of `BakeSettings` marked as recipe keys."""
    render_hints = typing.get_type_hints(RenderSettings)
    bake_hints = typing.get_type_hints(BakeSettings)
    return ([_param(item, render_hints) for item in dataclasses.fields(RenderSettings)]
            + [_param(item, bake_hints) for item in recipe_fields()])


def _ordered(params: list[Param]) -> tuple[Param, ...]:
    rank = {name: index for index, name in enumerate(KEY_ORDER)}
    return tuple(sorted(params, key=lambda param: rank.get(param.name, len(KEY_ORDER))))


RECIPE_PARAMS = _ordered([*_settings_params(), *OUTPUT_PARAMS, *TARGET_PARAMS])
# Recipe values a flag of every rendering script can replace (the bake's own, stages and meta_steps, are
# flags of the scripts that bake): the numbers of RenderSettings, and the output's.
FLAG_PARAMS = tuple(param for param in RECIPE_PARAMS if param.kind in ("int", "float")
                    and param.name not in {item.name for item in recipe_fields()})

DEFAULT_RECIPE = {param.name: param.default for param in RECIPE_PARAMS}


@dataclass
class RecipeChoice:
    """A run's recipe as the command line gives it: `name`, a recipe in recipes/ or a YAML file (None:
    not given), and `overrides`, the recipe values given as flags, which replace the recipe's."""

    name: str | None = None
    overrides: dict = field(default_factory=dict)

    def resolve(self, base: dict | None = None) -> dict:
        """The validated recipe: `name` (or `base`, e.g. a path's own recipe; else 'default') with the
        overrides applied."""
        recipe = dict(base) if base is not None else load_recipe(self.name or "default")
        return merge_overrides(recipe, self.overrides)


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
