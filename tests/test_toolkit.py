"""The image-quality toolkit: constraints, post-processing, schedules, targets, recipes, the reference doc
(transforms: test_transforms.py)."""

import math
from pathlib import Path

import pytest
import torch

from core.constraints import build_constraints
from core.errors import UserError
from core.postproc import build_postproc, quantize_pixels
from core.prompts import Target, combine_targets, parse_targets
from core.recipes import DEFAULT_RECIPE, load_recipe, merge_overrides, recipe_to_yaml, validate_recipe
from core.reference import REFERENCE_PATH, reference_markdown
from core.schedule import Ramp, is_active, parse_position, value_at
from core.transforms import TRANSFORMS


# ---------------------------------------------------------------- constraints


def constraint_value(item, pixels, progress=0.0):
    return build_constraints([item])(pixels, progress)


def test_blur_constraint_is_exact():
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(constraint_value({"blur": {"kernel_size": 3}}, flat), torch.zeros(2), atol=1e-7)
    # Columns alternating 0/1: a 3-tap gaussian [a, 1-2a, a] leaves every pixel 2a away from its value.
    stripes = (torch.arange(8) % 2).float().expand(1, 3, 8, 8)
    sigma = 0.8
    side = math.exp(-1 / (2 * sigma**2))
    a = side / (1 + 2 * side)
    value = constraint_value({"blur": {"kernel_size": 3, "sigma": sigma}}, stripes)
    assert torch.allclose(value, torch.tensor([4 * a * a]))


def test_saturation_constraint_is_exact():
    colors = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.0, 0.0], [0.5, 0.25, 0.5], [0.0, 0.0, 0.0]])
    pixels = colors.view(4, 3, 1, 1).expand(4, 3, 3, 3)
    assert torch.allclose(constraint_value("saturation", pixels), torch.tensor([0.0, 1.0, 0.5, 0.0]))


def test_mean_std_border_constraints_are_exact():
    pixels = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 4, 4).clone()
    assert torch.allclose(constraint_value("mean", pixels), torch.tensor([0.4]))
    halves = torch.zeros(1, 3, 4, 4)
    halves[..., 2:] = 1.0
    assert torch.allclose(constraint_value("std", halves), torch.tensor([0.5]))
    zeros = torch.zeros(1, 3, 6, 6)
    border = {"border": {"size": 1, "color": "0.3 0.6 0.9"}}
    assert torch.allclose(constraint_value(border, zeros), torch.tensor([0.6]))
    framed = torch.tensor([0.3, 0.6, 0.9]).view(1, 3, 1, 1).repeat(1, 1, 6, 6)
    framed[:, :, 1:-1, 1:-1] = 0.0
    assert torch.allclose(constraint_value(border, framed), torch.tensor([0.0]))


def test_constraint_hinges_are_exact():
    pixels = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    # Overall mean 0.4.
    assert torch.allclose(constraint_value({"mean": {"weight": 2, "below": 0.3}}, pixels), torch.tensor([0.2]))
    assert torch.allclose(constraint_value({"mean": {"weight": 2, "above": 0.5}}, pixels), torch.tensor([0.2]))
    assert torch.allclose(constraint_value({"mean": {"below": 0.5, "above": 0.3}}, pixels), torch.tensor([0.0]))
    # Per channel: relu(0.2-0.1) + relu(0.4-0.5) + relu(0.6-0.5), times 3.
    per_channel = {"mean": {"weight": 3, "below": "0.1 0.5 0.5"}}
    assert torch.allclose(constraint_value(per_channel, pixels), torch.tensor([0.6]))
    assert torch.allclose(constraint_value({"mean": {"weight": -1}}, pixels), torch.tensor([-0.4]))


def test_constraints_sum_and_schedule():
    pixels = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.equal(build_constraints([])(pixels, 0.5), torch.zeros(2))
    config = [{"mean": {"weight": 1}}, {"mean": {"weight": 10}, "start": 0.5}]
    constraints = build_constraints(config)
    assert torch.allclose(constraints(pixels, 0.2), torch.full((2,), 0.4))
    assert torch.allclose(constraints(pixels, 0.7), torch.full((2,), 4.4))


def test_constraints_are_twice_differentiable():
    scale = torch.tensor(1.3, requires_grad=True)
    raw = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(10), requires_grad=True)
    pixels = torch.sigmoid(raw * scale)
    constraints = build_constraints(load_recipe("hq")["constraints"] + [{"std": {"above": 0.5}}, "border"])
    (pixel_grad,) = torch.autograd.grad(constraints(pixels, 0.5).sum(), raw, create_graph=True)
    (scale_grad,) = torch.autograd.grad(pixel_grad.pow(2).sum(), scale)
    assert torch.isfinite(scale_grad) and scale_grad.abs() > 0


def test_constraint_errors():
    with pytest.raises(UserError, match="'above' takes one number"):
        build_constraints([{"saturation": {"above": "0.1 0.2 0.3"}}])
    with pytest.raises(UserError, match="unknown constraint 'sharpness'; valid: blur, border, mean"):
        build_constraints([{"sharpness": 1}])


# ---------------------------------------------------------------- post-processing


def test_postproc_entries_are_exact():
    pixels = torch.tensor([0.0, 0.26, 0.74, 1.3]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    quantized = build_postproc([{"quantize": 3}])(pixels, 0.0)
    assert quantized[0, 0].flatten().tolist() == [0.0, 0.5, 0.5, 1.0]
    clamped = build_postproc([{"clamp": "0.1 0.9"}])(pixels, 0.0)
    assert torch.allclose(clamped[0, 0].flatten(), torch.tensor([0.1, 0.26, 0.74, 0.9]))
    shifted = build_postproc([{"mean": 0.5}])(pixels, 0.0)
    assert torch.allclose(shifted.mean(), torch.tensor(0.5))
    assert torch.allclose(shifted - pixels, torch.full_like(pixels, 0.5 - pixels.mean()))
    framed = build_postproc([{"border": {"size": 1, "color": 0.25}}])(torch.ones(1, 3, 4, 4), 0.0)
    expected = torch.full((4, 4), 0.25)
    expected[1:3, 1:3] = 1.0
    assert torch.equal(framed[0, 1], expected)
    flat = torch.full((1, 3, 5, 5), 0.7)
    assert torch.allclose(build_postproc(["blur"])(flat, 0.0), flat)
    assert torch.equal(quantize_pixels(pixels, 0), pixels)


def test_postproc_returns_new_pixels_without_grad_and_respects_schedule():
    pixels = torch.full((1, 3, 4, 4), 2.0, requires_grad=True)
    postproc = build_postproc([{"clamp": {"max": 1.0}, "end": "50%"}])
    early = postproc(pixels, 0.1)
    assert not early.requires_grad and torch.equal(early, torch.ones(1, 3, 4, 4))
    assert torch.equal(pixels.detach(), torch.full((1, 3, 4, 4), 2.0))
    assert torch.equal(postproc(pixels, 0.6), pixels.detach())


# ---------------------------------------------------------------- scheduling


def test_positions_and_activity():
    assert parse_position(0.3) == 0.3
    assert parse_position("30%") == 0.3
    assert parse_position("120") == 120 and parse_position(120) == 120
    assert is_active(None, None, 0.0) and is_active(None, None, 1.0)
    assert not is_active("30%", None, 0.2) and is_active("30%", None, 0.3)
    assert is_active(None, 0.5, 0.49) and not is_active(None, 0.5, 0.5)
    assert is_active(50, 150, 100 / 200, total_steps=200)
    assert not is_active(50, 150, 150 / 200, total_steps=200)
    assert not is_active(50, None, 49 / 200, total_steps=200)
    assert is_active(None, "100%", 1.0)
    for bad in ("soon", "150%", -3, True):
        with pytest.raises(UserError):
            parse_position(bad)
    with pytest.raises(UserError, match="total step count"):
        is_active(10, None, 0.5)
    assert is_active(None, 200, 1.0, total_steps=200)  # the last step is still in the run
    with pytest.raises(UserError, match=r"start 500 is past the end of the run \(200 steps\)"):
        is_active(500, None, 0.5, total_steps=200)


def test_schedule_inside_the_parameters():
    item = {"noise": {"std": 0.1, "end": "50%"}}
    assert TRANSFORMS.configure(item).end == 0.5 and TRANSFORMS.configure(item).values["std"] == (0.1,)
    assert item == {"noise": {"std": 0.1, "end": "50%"}}  # the caller's config is left as it was
    with pytest.raises(UserError, match="'end' is given twice"):
        TRANSFORMS.configure({"noise": {"std": 0.1, "end": 0.5}, "end": 0.3})


def test_ramp_values():
    assert value_at(Ramp(1.0, 0.0), 0.25) == 0.75
    assert value_at(Ramp((0.0, 10.0), (1.0, 20.0)), 0.5) == (0.5, 15.0)
    assert value_at(Ramp(3, 11, integer=True), 0.5) == 7
    assert value_at(0.4, 0.9) == 0.4


# ---------------------------------------------------------------- targets


def test_parse_targets(tmp_path):
    image = tmp_path / "cat.png"
    image.write_bytes(b"")
    assert parse_targets("a lemon") == [Target("text", "a lemon", 1.0)]
    assert parse_targets("a lemon:1 | text, words:-0.5") == [
        Target("text", "a lemon", 1.0), Target("text", "text, words", -0.5)]
    assert parse_targets(f"{image}:0.3 | a cat") == [
        Target("image", str(image), 0.3), Target("text", "a cat", 1.0)]
    assert parse_targets("ratio 3:2 photo") == [Target("text", "ratio 3:2 photo", 1.0)]
    assert parse_targets("a:b") == [Target("text", "a:b", 1.0)]
    assert parse_targets("a photo 16:9") == [Target("text", "a photo 16:9", 1.0)]
    assert parse_targets("night sky : .5") == [Target("text", "night sky", 0.5)]
    assert parse_targets("a photo of cat.png") == [Target("text", "a photo of cat.png", 1.0)]
    for bad in ("", "a lemon | ", ":2", "missing/cat.png"):
        with pytest.raises(UserError):
            parse_targets(bad)


def test_combine_targets():
    embeddings = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    assert torch.allclose(combine_targets(embeddings, [1.0, -0.5]), torch.tensor([1.0, -0.5]))
    with pytest.raises(UserError):
        combine_targets(embeddings, [-1.0, 0.5])


# ---------------------------------------------------------------- recipes


def test_recipes_load_and_validate():
    assert load_recipe(None) == load_recipe("default") == DEFAULT_RECIPE
    original = load_recipe("original")
    assert original["quantize"] == 16 and original["size"] == 128
    hq = load_recipe("hq")
    assert [next(iter(item)) for item in hq["constraints"]] == ["blur", "saturation"]
    with pytest.raises(UserError, match="recipe not found: nonesuch"):
        load_recipe("nonesuch")


def test_merge_overrides_and_validation(tmp_path):
    recipe = load_recipe("default")
    merged = merge_overrides(recipe, {"size": 64, "lr": None, "cutn": "4"})
    assert (merged["size"], merged["lr"], merged["cutn"]) == (64, 0.12, 4)
    assert recipe["size"] == 128
    with pytest.raises(UserError, match="unknown key 'sise'; valid: size, stages"):
        validate_recipe({**recipe, "sise": 64})
    with pytest.raises(UserError, match="unknown parameter 'angle'; valid: degree, center, padding"):
        validate_recipe({**recipe, "views": [{"random_rotate": {"angle": 3}}]})
    with pytest.raises(UserError, match="lr"):
        merge_overrides(recipe, {"lr": "fast"})
    custom = tmp_path / "mine.yaml"
    custom.write_text("size: 96\nviews:\n  - noise: 0.1 0.2 0.3\n    end: 50%\n")
    loaded = load_recipe(str(custom))
    assert loaded["size"] == 96 and loaded["stages"] == DEFAULT_RECIPE["stages"]
    custom.write_text(recipe_to_yaml(loaded))
    assert load_recipe(str(custom)) == loaded
    custom.write_text("size: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(str(custom))


# ---------------------------------------------------------------- reference


def test_reference_doc_is_up_to_date():
    assert Path(REFERENCE_PATH).read_text(encoding="utf-8") == reference_markdown(), (
        "docs/reference.md is stale: run `python -m core.reference`"
    )


def test_microwave_uses_the_paths_recipe_unless_one_is_named():
    """microwave.py replays a path with the recipe it was baked with; an explicit --recipe, `default` too,
    replaces it; a legacy path (no recipe) gets the default one."""
    from core import cli
    from core.image_jobs import path_recipe
    from core.paths import BakedPath

    baked = BakedPath("one", torch.zeros(2, 512), None, "tiny", 512, recipe={"size": 32, "steps_per_stage": 2})
    parser = cli.make_parser("test")

    def choice(*argv: str):
        return cli.recipe_choice(parser.parse_args(list(argv)))

    assert path_recipe(baked, choice())["size"] == 32
    assert path_recipe(baked, choice("--recipe", "default"))["size"] == 128
    assert path_recipe(baked, choice("--recipe", "quick"))["size"] == 48
    baked.recipe = {}
    assert path_recipe(baked, choice())["size"] == 128


def test_the_reference_command_takes_no_option_for_a_file(tmp_path, capsys, monkeypatch):
    from core.reference import main

    monkeypatch.chdir(tmp_path)
    assert main(["--help"]) == 0 and "usage: python -m core.reference" in capsys.readouterr().out
    assert main(["--out"]) == 2 and "unknown option --out" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither wrote a file named like the option
    assert main([str(tmp_path / "ref.md")]) == 0
    assert (tmp_path / "ref.md").read_text(encoding="utf-8") == reference_markdown()
