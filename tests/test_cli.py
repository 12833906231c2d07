"""From the command line to typed jobs (core.cli, core.jobs), in this process: flags derived from the settings
dataclasses, a field added to them becoming a recipe key and a flag, and the jobs the scripts build."""
from __future__ import annotations

import dataclasses
import importlib
import pickle
import runpy
import sys
from dataclasses import dataclass, field

import pytest

from conftest import REPO
from core import cli, recipes
from core.bake_settings import BakeSettings
from core.errors import UserError
from core.jobs import BakeJob, EvaluateJob, RunOptions
from core.recipes import RecipeChoice
from core.render import RenderSettings


def bake_parser(settings: type = BakeSettings, flags=recipes.FLAG_PARAMS) -> cli.Parser:
    parser = cli.make_parser("test", recipe=False)
    cli.add_recipe_arguments(parser, flags)
    cli.add_bake_arguments(parser, settings)
    return parser


def test_every_render_setting_is_a_recipe_key_and_its_numbers_are_flags():
    keys = {param.name for param in recipes.RECIPE_PARAMS}
    assert {item.name for item in dataclasses.fields(RenderSettings)} <= keys
    assert {"stages", "meta_steps", "meta_lr"} <= keys and "unroll" not in keys  # only the marked bake settings
    flags = {param.name for param in recipes.FLAG_PARAMS}
    assert flags == {"size", "steps_per_stage", "drawer", "lr", "lr_end", "weight_decay", "tv_weight", "range_weight",
                     "cutn", "quantize"}
    # the order recipes were always written in (the YAML beside an image, the list of valid keys)
    assert [param.name for param in recipes.RECIPE_PARAMS] == list(recipes.KEY_ORDER)


def test_bake_flags_are_the_bake_settings_with_help():
    parser = bake_parser()
    options = {action.dest: action for action in parser._actions}
    for item in dataclasses.fields(BakeSettings):
        assert (item.name in options) == ("help" in item.metadata), item.name
    assert options["meta_lr"].option_strings == ["--meta-lr"]
    assert options["unroll"].default == BakeSettings().unroll  # a bake flag that is not a recipe key has a default
    assert set(options["meta"].choices) >= {"unrolled", "cma", "ga"}
    args = parser.parse_args(["--meta-lr", "0.002", "--stages", "3", "--size", "16", "--critic", "none",
                              "--unroll", "2"])
    assert cli.bake_settings(args) == dataclasses.replace(BakeSettings(), unroll=2)
    # recipe keys given as flags override the recipe; those not given stay the recipe's
    assert cli.recipe_choice(args) == RecipeChoice(None, {"size": 16, "stages": 3, "meta_lr": 0.002, "critic": "none"})
    with pytest.raises(SystemExit):
        parser.parse_args(["--unroll", "0"])  # a minimum is checked before any work


def test_a_switch_that_turns_something_off_does_not_say_default_true():
    text = " ".join(bake_parser().format_help().split())
    assert "by default one is written to OUT/reports/" in text and "(default: True)" not in text
    assert "--truncate cut prompts longer than 77 tokens (default: False)" in " ".join(
        cli.make_parser("test").format_help().split())  # the other switches still show their default


def test_a_field_added_to_the_settings_is_a_recipe_key_and_a_flag(monkeypatch):
    """What a new option needs is a field with `help`: here a text render setting and a bake number."""

    @dataclass
    class Render(RenderSettings):
        dither: str = field(default="none", metadata={"help": "how the image is dithered"})

    @dataclass
    class Bake(BakeSettings):
        meta_momentum: float = field(default=0.9, metadata={"help": "momentum of the guides", "minimum": 0})

    params = recipes.recipe_params(Render, Bake)
    dither = next(param for param in params if param.name == "dither")
    assert (dither.kind, dither.default, dither.doc) == ("text", "none", "how the image is dithered")
    assert params[-1] is dither  # new keys follow the ones of KEY_ORDER
    flags = recipes.flag_params(params, Render)
    args = bake_parser(Bake, flags).parse_args(["--dither", "fine", "--meta-momentum", "0.5"])
    assert cli.recipe_choice(args, flags, Bake).overrides == {"dither": "fine"}
    assert cli.bake_settings(args, Bake).meta_momentum == 0.5
    with pytest.raises(UserError, match="unknown key 'dither'"):
        recipes.validate_recipe({"dither": "fine"})
    monkeypatch.setattr(recipes, "RECIPE_PARAMS", params)
    assert recipes.validate_recipe({"dither": "fine"})["dither"] == "fine"
    assert Render.from_recipe(recipes.validate_recipe({"dither": "fine"})).dither == "fine"
    with pytest.raises(UserError, match="dither"):
        recipes.validate_recipe({"dither": 3})


def test_a_bake_job_resolves_its_recipe_and_pickles():
    job = BakeJob(["a red circle"], recipe=RecipeChoice("quick", {"stages": 2}),
                  bake=BakeSettings(meta_lr=0.002, stages=99, unroll=2))
    recipe = job.recipe.resolve()
    assert (recipe["size"], recipe["stages"], recipe["steps_per_stage"]) == (48, 2, 15)
    bake = job.bake.with_recipe(recipe)
    # the flag's, the recipe's (quick halves the meta-lr and scores half by scenes-judge), the settings' own
    # where no recipe key
    assert (bake.stages, bake.meta_steps, bake.meta_lr, bake.unroll) == (2, 30, 0.00025, 2)
    assert (bake.critic, bake.critic_weight) == ("scenes-judge", 0.5)
    default = job.bake.with_recipe(RecipeChoice("default").resolve())
    assert (default.critic, default.critic_weight) == ("auto", 1.0)
    flagged = RecipeChoice("quick", {"critic_weight": 0.3}).resolve()  # a flag overrides the recipe's share
    assert job.bake.with_recipe(flagged).critic_weight == 0.3
    assert pickle.loads(pickle.dumps(job)) == job  # what a worker process or a Ray task is given


# The job function each script hands its job to.
JOB_FUNCTIONS = {"normal.py": ("image_jobs", "normal_job"), "microwave.py": ("image_jobs", "microwave_job"),
                 "auto_microwave.py": ("image_jobs", "auto_microwave_job"), "bake.py": ("bake_jobs", "bake_job"),
                 "batch_bake.py": ("bake_jobs", "batch_bake_job"), "evaluate.py": ("evaluate_job", "evaluate_job"),
                 "bench.py": ("bench", "bench_job")}


def parse_script(script: str, monkeypatch, *argv: str):
    """The job a script would run for `argv`, built by its own parser and core.cli, without running it."""
    handed: list = []
    module, function = JOB_FUNCTIONS[script]
    monkeypatch.setattr(importlib.import_module(f"core.{module}"), function, handed.append)
    monkeypatch.setattr(cli, "run", lambda main: main())
    monkeypatch.setattr(sys, "argv", [script, *argv])
    runpy.run_path(str(REPO / script), run_name="parse_only")["main"]()
    assert len(handed) == 1
    return handed[0]


def test_scripts_build_typed_jobs(monkeypatch):
    normal = parse_script("normal.py", monkeypatch, "a cat", "--model", "tiny", "--size", "16", "--seed", "4")
    assert normal.prompt == "a cat" and normal.run.model == "tiny" and normal.run.seed == 4
    assert normal.recipe == RecipeChoice(None, {"size": 16}) and normal.image.upscale == 4
    microwave = parse_script("microwave.py", monkeypatch, "a dog", "baked/x.pt", "--recipe", "quick")
    assert (microwave.prompt, microwave.path, microwave.recipe.name) == ("a dog", "baked/x.pt", "quick")
    assert parse_script("microwave.py", monkeypatch, "baked/x.pt").prompt is None
    auto = parse_script("auto_microwave.py", monkeypatch, "a cow", "--k", "3", "--mode", "mean")
    assert (auto.k, auto.mode, auto.path_weight) == (3, "mean", None)
    bake = parse_script("bake.py", monkeypatch, "a cat", "--overwrite", "--no-report", "--meta", "cma")
    assert bake == BakeJob(["a cat"], RunOptions(), RecipeChoice(), BakeSettings(meta="cma"), batch_size=1,
                           report=False, overwrite=True, skip_existing=False)
    batch = parse_script("batch_bake.py", monkeypatch, "a", "b", "--gpus", "cpu:2", "--batch-size", "3")
    assert (batch.prompts, batch.gpus, batch.batch_size, batch.skip_existing) == (["a", "b"], "cpu:2", 3, True)
    evaluate = parse_script("evaluate.py", monkeypatch, "prompts.txt", "--methods", "normal, auto", "--starts", "2")
    assert isinstance(evaluate, EvaluateJob) and evaluate.methods == ["normal", "auto"]
    assert evaluate.bake.starts == 2 and evaluate.batch_size == 8
    bench = parse_script("bench.py", monkeypatch, "--prompts", "1,8", "--device", "cpu")
    assert (bench.model, bench.prompts, bench.bake_prompts) == ("vit-b-32", [1, 8], "auto")
