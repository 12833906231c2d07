"""Recipes: YAML files with the renderer's settings and its image-quality toolkit.

A recipe is a name (`original` is `recipes/original.yaml` in the repository) or a path to a YAML
file. Keys left out take the defaults below; command-line values that are given replace recipe
values. `drawer` is one toolkit entry, `views`, `constraints` and `postproc` are lists of them (sections
below); without `views` the default chain is used. normal, microwave and auto_microwave save the resolved
recipe beside each image (`<image>.yaml`); a baked path keeps it in its file.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.bake_settings import BakeSettings
from core.constraints import build_constraints
from core.drawers import build_drawer, drawer_name
from core.errors import UserError, cut, quote
from core.limits import MAX_QUANTIZE
from core.postproc import build_postproc
from core.registry import Param
from core.safe_yaml import check_nesting, load_yaml
from core.render import RenderSettings
from core.transforms import build_chain

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

# Recipe keys that belong to no settings dataclass: how the saved image is quantised, what every prompt adds.
OUTPUT_PARAMS = (Param("quantize", 0, "colour levels per channel of the saved image (16 = the original's "
                                      "pixel-art look; 0 = off)", kind="int", minimum=0,
                        maximum=MAX_QUANTIZE),)
TARGET_PARAMS = (Param("targets", "", "weighted targets added to every prompt, e.g. 'text, words:-0.5 | "
                                      "pixel art:0.5'", kind="text"),)
# The order recipes are written in (the YAML beside an image, errors listing the keys); keys added later
# follow in the order they are declared.
KEY_ORDER = ("size", "stages", "steps_per_stage", "drawer", "lr", "lr_end", "weight_decay", "tv_weight", "range_weight",
             "cutn", "quantize", "meta_steps", "meta_lr", "critic", "critic_weight", "targets", "views", "constraints",
             "postproc")
_KINDS = {int: "int", float: "float", str: "text", bool: "bool"}
FLAG_KINDS = ("int", "float", "text", "entry")  # recipe values a command-line flag can give (an entry: its name)


def _kind(hint) -> str:
    """A Param kind from a field's type: int, float, str, bool (also when optional); lists and dicts: list."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        given = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = given[0] if len(given) == 1 else list
    return _KINDS.get(hint, "list")


def _param(item: dataclasses.Field, hints: dict) -> Param:
    """A recipe key from a settings field: its default, its `help` and `minimum` metadata, its type."""
    if "recipe_default" in item.metadata:
        default = copy.deepcopy(item.metadata["recipe_default"])
    elif item.default is not dataclasses.MISSING:
        default = item.default
    else:
        default = item.default_factory()
    return Param(item.name, default, item.metadata["help"], kind=item.metadata.get("kind", _kind(hints[item.name])),
                 minimum=item.metadata.get("minimum"), maximum=item.metadata.get("maximum"))


def recipe_params(render: type = RenderSettings, bake: type = BakeSettings) -> tuple[Param, ...]:
    """The recipe keys: every field of the render settings, the fields of the bake settings marked
    `recipe`, `quantize` and `targets`; in `KEY_ORDER`, then in the order declared."""
    render_hints, bake_hints = typing.get_type_hints(render), typing.get_type_hints(bake)
    params = ([_param(item, render_hints) for item in dataclasses.fields(render)]
              + [_param(item, bake_hints) for item in dataclasses.fields(bake) if item.metadata.get("recipe")])
    rank = {name: index for index, name in enumerate(KEY_ORDER)}
    return tuple(sorted([*params, *OUTPUT_PARAMS, *TARGET_PARAMS],
                        key=lambda param: rank.get(param.name, len(KEY_ORDER))))


def flag_params(params: tuple[Param, ...], render: type = RenderSettings) -> tuple[Param, ...]:
    """The recipe values every rendering script takes as flags: the numbers and texts of the render
    settings, and `quantize` (a bake's own, `stages` and `meta_steps`, are flags of the scripts that bake)."""
    names = {item.name for item in dataclasses.fields(render)} | {param.name for param in OUTPUT_PARAMS}
    return tuple(param for param in params if param.name in names and param.kind in FLAG_KINDS)


RECIPE_PARAMS = recipe_params()
FLAG_PARAMS = flag_params(RECIPE_PARAMS)
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
    if "/" not in text and "\\" not in text and not os.path.isfile(path):
        path = RECIPES_DIR / (text if path.suffix.lower() in (".yaml", ".yml") else f"{text}.yaml")
    if not os.path.isfile(path):  # os.path: False (not an error) for an over-long name
        known = ", ".join(sorted(item.stem for item in RECIPES_DIR.glob("*.yaml"))) or "none"
        raise UserError(f"recipe not found: {cut(text)} (recipes: {known}, or a path to a .yaml file)")
    return path


def load_recipe(name_or_file: str | Path | None = None) -> dict:
    """The validated recipe `name_or_file` (None: the defaults), missing keys filled with defaults."""
    if name_or_file is None:
        return validate_recipe(copy.deepcopy(DEFAULT_RECIPE))
    path = recipe_path(name_or_file)
    loaded = load_yaml(path)  # bounded: no aliases, limited size and nesting
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise UserError(f"recipe {path} must be a mapping of settings, got {type(loaded).__name__}")
    recipe = copy.deepcopy(DEFAULT_RECIPE)
    recipe.update(loaded)
    return validate_recipe(recipe, source=str(path))


def merge_overrides(recipe: dict, overrides: dict) -> dict:
    """A copy of `recipe` where every override that is not None replaces the recipe value, validated."""
    check_nesting(recipe, "recipe")  # before deepcopy, which would recurse through it
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
    check_nesting(recipe, source)
    known = [param.name for param in RECIPE_PARAMS]
    unknown = [key for key in recipe if key not in known]
    if unknown:
        raise UserError(f"{source}: unknown key {quote(unknown[0])}; valid: {', '.join(known)}")
    parsed: dict[str, Any] = {}
    for param in RECIPE_PARAMS:
        raw = recipe.get(param.name, param.default)
        value = param.parse(param.default if raw is None else raw, source)
        if param.kind not in ("list", "text", "entry") and not isinstance(value, (int, float)):
            raise UserError(f"{source}: {param.name} expects {param.describe()}, got {quote(raw)}")
        parsed[param.name] = value
    if parsed["quantize"] == 1:
        raise UserError(f"{source}: quantize needs at least 2 values per channel (or 0 for off)")
    total_steps = parsed["stages"] * parsed["steps_per_stage"]
    # Building the toolkit parses every entry, so all their errors surface here, before any work.
    build_chain(parsed["views"], 224, total_steps)
    build_constraints(parsed["constraints"], total_steps)
    build_postproc(parsed["postproc"], total_steps)
    build_drawer(parsed["drawer"], parsed["size"])
    if parsed["postproc"] and drawer_name(parsed["drawer"]) != "pixels":
        raise UserError(f"{source}: postproc edits pixels, so it needs the pixels drawer (drawer: "
                        f"{drawer_name(parsed['drawer'])})")
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
