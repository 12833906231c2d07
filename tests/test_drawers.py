"""Drawers (`core.drawers`, the recipe key `drawer`): each one's start, image and inverse, the renderer and the
bake's unrolled meta-gradient through it (tiny model; a random-init ViT-B/32 at 224 px in the slow tier), the
recipe's checks, and the scripts with every drawer."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from core import recipes
from core.drawers import DRAWERS, build_drawer
from core.errors import UserError
from core.images import read_png_metadata
from core.meta_loss import initial_guides, replay_loss
from core.render import Pipeline, RenderSettings, adam_update, AdamState, draw, random_pixels, random_start, replay
from core.paths import load_path
from inprocess import run_in_process

NAMES = DRAWERS.names()
SMALL = RenderSettings(size=32, steps_per_stage=4, cutn=2)


def test_every_drawer_is_registered_and_documented():
    assert NAMES == ["fft", "outlines", "pixels", "pyramid", "shapes"]
    assert all(DRAWERS.entries[name].summary for name in NAMES)
    assert "drawer" in {param.name for param in recipes.RECIPE_PARAMS}
    assert recipes.DEFAULT_RECIPE["drawer"] == "pixels"


@pytest.mark.parametrize("name", NAMES)
def test_a_start_is_seeded_per_prompt_and_draws_an_image(name):
    drawer = build_drawer(name, 24)
    both = drawer.init([1, 2], torch.device("cpu"))
    alone = drawer.init([2], torch.device("cpu"))
    assert torch.equal(both[1], alone[0])  # a prompt's start does not depend on its batch
    assert not torch.equal(both[0], both[1])
    images = drawer.image(both)
    assert images.shape == (2, 3, 24, 24) and torch.isfinite(images).all()
    assert images.min() >= -0.01 and images.max() <= 1.01  # every drawer starts inside [0, 1]
    assert images.std() > 0.01  # not a blank start


def test_the_pixels_drawer_is_the_old_renderer():
    settings = RenderSettings(size=16)
    start = random_start(settings, [3, 4], torch.device("cpu"))
    assert torch.equal(start, random_pixels([3, 4], 16, torch.device("cpu")))
    assert torch.equal(draw(settings, start), ((start + 1) / 2).clamp(0, 1))


@pytest.mark.parametrize("name, tolerance", [("pixels", 1e-6), ("pyramid", 1e-6), ("fft", 1e-4)])
def test_an_invertible_drawer_draws_back_the_image_it_starts_from(name, tolerance):
    drawer = build_drawer(name, 20)
    images = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    assert (drawer.image(drawer.from_image(images)) - images).abs().max().item() < tolerance


@pytest.mark.parametrize("name", ["shapes", "outlines"])
def test_shapes_and_outlines_cannot_start_from_an_image(name):
    with pytest.raises(UserError, match=f"{name} drawer cannot start from an image"):
        build_drawer(name, 16).from_image(torch.rand(1, 3, 16, 16))


def test_shapes_moves_where_its_parameters_say():
    """One opaque red disc over a black background: the red sits where the centre says."""
    drawer = build_drawer({"shapes": {"count": 1, "gain": 1.0}}, 32)
    params = torch.zeros(1, 2, 7)
    params[0, 0] = torch.tensor([-0.5, 0.0, torch.tensor(0.25).log(), 9.0, -9.0, -9.0, 9.0])
    params[0, 1, 3:6] = -9.0  # background black
    image = drawer.image(params)[0]
    left, right = image[0, :, :16].mean(), image[0, :, 16:].mean()
    assert left > 0.08 and right < 0.01  # the disc covers about a tenth of the left half
    assert image[1:].max() < 0.01  # no green or blue anywhere


def test_an_outline_takes_the_radii_its_parameters_say():
    """One opaque red outline, radius 0.6 at 4 of 8 angles and 0.15 at the others: a four-pointed cross whose
    arms (along the axes) reach out far beyond its diagonals."""
    drawer = build_drawer({"outlines": {"count": 1, "vertices": 8, "gain": 1.0}}, 64)
    radii = torch.tensor([0.6, 0.15] * 4).log()  # angle k at -pi + k * pi/4: arms left, up, right, down
    params = torch.zeros(1, 2, 2 + 8 + 4)
    params[0, 0] = torch.cat([torch.zeros(2), radii, torch.tensor([9.0, -9.0, -9.0, 9.0])])
    params[0, 1, -4:-1] = -9.0  # background black
    red = drawer.image(params)[0, 0]
    centre, arm, diagonal = red[32, 32], red[32, 32 + 14], red[32 + 10, 32 + 10]  # 14 px = radius 0.44
    assert centre > 0.95 and arm > 0.95 and diagonal < 0.05, (centre, arm, diagonal)
    assert (red - red.flip(1)).abs().max() < 1e-3  # symmetric left-right


def test_roundness_is_zero_for_a_circle_and_grows_with_an_outlines_arms():
    """`roundness` x the mean over outlines of their log radii's variance: 0 for circles, 0 when off, and a
    four-pointed cross (radii 0.6 and 0.15 at alternate angles, gain 1) costs roundness x (ln 4 / 2)^2."""
    drawer = build_drawer({"outlines": {"count": 2, "vertices": 8, "gain": 1.0, "roundness": 3.0}}, 16)
    params = drawer.init([0, 1], torch.device("cpu"))
    assert drawer.penalty(params).abs().max() < 1e-6  # every outline starts as a circle
    params[1, 0, 2:10] = torch.tensor([0.6, 0.15] * 4).log()  # prompt 1, first of its two outlines: a cross
    expected = 3.0 * (math.log(4) / 2) ** 2 / 2  # the cross's variance, averaged with the other (circle) outline
    penalty = drawer.penalty(params)
    assert penalty[0].abs() < 1e-6 and abs(penalty[1].item() - expected) < 1e-4 * expected, penalty
    off = build_drawer({"outlines": {"count": 2, "vertices": 8, "gain": 1.0}}, 16)
    assert off.penalty(params).abs().max() == 0


@pytest.mark.parametrize("name", ["pixels", "fft", "pyramid", "shapes"])
def test_other_drawers_add_no_penalty(name):
    drawer = build_drawer(name, 16)
    params = drawer.init([0, 1], torch.device("cpu"))
    assert drawer.penalty(params).shape == (2,) and (drawer.penalty(params) == 0).all()


def test_roundness_keeps_outlines_rounder_in_a_replay(tiny_clip):
    """The same start and guide: with the pull toward circles the outlines end with less spread in their
    radii than without, and the guide's loss still falls."""
    embedding = tiny_clip.encode_text(["a blue square"])
    spreads = []
    for roundness in (0.0, 30.0):
        settings = replace(SMALL, drawer={"outlines": {"count": 4, "roundness": roundness}}, lr=0.2)
        losses = []
        params = replay(tiny_clip, initial_guides(embedding, 2), settings, random_start(settings, [0], tiny_clip.device),
                        on_step=lambda step, pixels, loss: losses.append(loss.item()))
        assert losses[-1] < losses[0], losses
        spreads.append(params[0, :-1, 2:18].var(dim=-1).mean().item())
    assert spreads[0] > 1e-4 and spreads[1] < 0.5 * spreads[0], spreads


@pytest.mark.parametrize("name", ["shapes", "outlines"])
def test_a_grey_backdrop_has_no_hue(name):
    """Where no shape covers the image, a grey backdrop is one brightness in all channels; a free one is not."""
    grey, free = (build_drawer({name: {"count": 1, "backdrop": backdrop}}, 16) for backdrop in ("grey", "free"))
    params = grey.init([5], torch.device("cpu"))
    params[0, 0, :2] = 50.0  # the one shape far off the image
    params[0, 1, -4:-1] = torch.tensor([2.0, -1.0, 0.5])  # a reddish backdrop if it were free
    image = grey.image(params)[0]
    assert (image - image[0:1]).abs().max() < 1e-6 and abs(image.mean().item() - torch.sigmoid(torch.tensor(0.5))) < 1e-4
    assert (free.image(params)[0, 0] - free.image(params)[0, 1]).abs().min() > 0.5



@pytest.mark.parametrize("name", ["shapes", "outlines"])
def test_shapes_start_as_opaque_as_their_opacity_says(name):
    """`opacity` is each shape's starting opacity logit: a lone shape over a black backdrop shows at its centre
    with sigmoid(opacity) of its colour."""
    for opacity in (-2.0, 1.0):
        drawer = build_drawer({name: {"count": 1, "opacity": opacity, "backdrop": "grey"}}, 16)
        params = drawer.init([3], torch.device("cpu"))
        params[0, 0, :2] = 0.0  # centred
        params[0, 0, 2:drawer.geometry] = 2.0  # large: covers the middle of the image
        params[0, 0, -4:-1] = torch.tensor([10.0, -10.0, -10.0])  # red
        params[0, 1, -4:-1] = -10.0  # black backdrop
        red = drawer.image(params)[0, 0, 8, 8].item()
        assert abs(red - torch.sigmoid(torch.tensor(opacity)).item()) < 1e-3, (opacity, red)
@pytest.mark.parametrize("name", NAMES)
def test_replay_lowers_the_guide_loss_with_every_drawer(tiny_clip, name):
    settings = replace(SMALL, drawer=name, lr=0.05)
    embedding = tiny_clip.encode_text(["a blue square"])
    losses = []
    pixels = replay(tiny_clip, initial_guides(embedding, 2), settings, random_start(settings, [0], tiny_clip.device),
                    on_step=lambda step, params, loss: losses.append(loss.item()))
    assert len(losses) == 8 and losses[-1] < losses[0], losses
    assert torch.isfinite(pixels).all()


def _meta_gradient(clip, settings: RenderSettings, stages: int = 2) -> torch.Tensor:
    embedding = clip.encode_text(["a red circle"]).detach()
    guides = initial_guides(embedding, stages).requires_grad_(True)
    pipeline = Pipeline.build(settings, clip, stages * settings.steps_per_stage)
    loss = replay_loss(clip, guides, embedding, settings, [0], draw=0, starts=1, pipeline=pipeline, unroll=1)
    loss.sum().backward()
    return guides.grad[0].norm(dim=-1)


@pytest.mark.parametrize("name", NAMES)
def test_the_meta_gradient_reaches_every_stage_through_every_drawer(tiny_clip, name):
    per_stage = _meta_gradient(tiny_clip, replace(SMALL, drawer=name))
    assert torch.isfinite(per_stage).all() and (per_stage > 0).all(), per_stage


def test_the_meta_gradient_reaches_every_stage_through_round_outlines(tiny_clip):
    per_stage = _meta_gradient(tiny_clip, replace(SMALL, drawer={"outlines": {"count": 4, "roundness": 3.0}}))
    assert torch.isfinite(per_stage).all() and (per_stage > 0).all(), per_stage


def test_adams_denominator_keeps_the_meta_gradient_finite_where_a_gradient_is_zero():
    """A parameter whose gradient is exactly 0 (a shape off the image) must not make the meta-gradient NaN."""
    pixels = torch.zeros(3, requires_grad=True)
    grad = pixels * torch.tensor([1.0, 0.0, 2.0])  # the middle parameter's gradient is exactly zero
    update, _ = adam_update(grad, pixels, AdamState(torch.zeros(3), torch.zeros(3)), lr=0.1)
    (second,) = torch.autograd.grad(update.sum(), pixels)
    assert torch.isfinite(second).all()
    plain, _ = adam_update(torch.tensor([0.3, 0.01, -2.0]), torch.zeros(3), AdamState(torch.zeros(3), torch.zeros(3)),
                           lr=0.1)
    assert torch.allclose(plain, torch.tensor([-0.1, -0.1, 0.1]), rtol=1e-5)  # Adam's first step: lr * sign


@pytest.mark.parametrize("config, message", [
    ("brush", "unknown drawer 'brush'; valid: fft, outlines, pixels, pyramid, shapes"),
    ({"outlines": {"vertices": 2}}, "parameter 'vertices' expects an integer, 3 to 64"),
    ({"outlines": {"roundness": -1}}, "parameter 'roundness' expects a number, 0 to 1000"),
    ({"outlines": {"roundness": float("nan")}}, "parameter 'roundness' expects a number, 0 to 1000"),
    ({"shapes": {"count": 0}}, "parameter 'count' expects an integer, 1 to 1024"),
    ({"shapes": {"count": 10**9}}, "parameter 'count' expects an integer, 1 to 1024"),
    ({"pyramid": {"levels": 99}}, "parameter 'levels' expects an integer, 1 to 12"),
    ({"fft": {"decay": float("nan")}}, "parameter 'decay' expects a number"),
    ({"fft": {"end": 0.5}}, "a drawer cannot be scheduled"),
    (3, "'drawer' expects a name or {name: parameters}, got 3"),
])
def test_a_bad_drawer_is_one_line_before_any_work(config, message):
    with pytest.raises(UserError, match=None) as error:
        recipes.validate_recipe({"drawer": config})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_shapes_drawers_memory_is_limited_before_anything_is_allocated():
    with pytest.raises(UserError, match="shapes x size\\^2 numbers per image: 1024 x 4096\\^2 is over the limit"):
        recipes.validate_recipe({"drawer": {"shapes": {"count": 1024}}, "size": 4096})
    assert recipes.validate_recipe({"drawer": {"shapes": {"count": 1024}}, "size": 224})["size"] == 224


def test_postproc_needs_the_pixels_drawer():
    with pytest.raises(UserError, match="postproc edits pixels, so it needs the pixels drawer"):
        recipes.validate_recipe({"drawer": "fft", "postproc": ["blur"]})
    assert recipes.validate_recipe({"postproc": ["blur"]})["drawer"] == "pixels"


TINY = ["--model", "tiny", "--size", "16", "--steps-per-stage", "2", "--cutn", "1", "--quiet"]


@pytest.mark.parametrize("name", NAMES)
def test_normal_draws_with_the_drawer_and_records_it(tmp_path, name):
    ran = run_in_process("normal.py", ["a red circle", *TINY, "--drawer", name, "--out", str(tmp_path)], tmp_path)
    assert ran.code == 0, ran.err
    (png,) = tmp_path.glob("*.png")
    assert json.loads(read_png_metadata(png)["recipe"])["drawer"] == name
    assert f"drawer: {name}" in png.with_suffix(".yaml").read_text()


def test_a_path_keeps_its_drawer_and_microwave_replays_with_it(tmp_path):
    recipe = tmp_path / "shapes.yaml"
    recipe.write_text("drawer:\n  shapes: {count: 6}\nstages: 2\nmeta_steps: 2\n")
    store, out = tmp_path / "baked", tmp_path / "out"
    ran = run_in_process("bake.py", ["a red circle", *TINY, "--recipe", str(recipe), "--store", str(store),
                                     "--no-report"], tmp_path)
    assert ran.code == 0, ran.err
    (file,) = store.glob("*.pt")
    path = load_path(file)
    assert path.recipe["drawer"] == {"shapes": {"count": 6}} and torch.isfinite(path.guides).all()
    ran = run_in_process("microwave.py", [str(file), "--model", "tiny", "--quiet", "--out", str(out)], tmp_path)
    assert ran.code == 0, ran.err
    (png,) = out.glob("*.png")
    assert json.loads(read_png_metadata(png)["recipe"])["drawer"] == {"shapes": {"count": 6}}


def test_shapes_with_init_is_one_line(tmp_path):
    image = tmp_path / "start.png"
    from PIL import Image
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    ran = run_in_process("normal.py", ["a red circle", *TINY, "--drawer", "shapes", "--init", str(image),
                                       "--out", str(tmp_path / "out")], tmp_path)
    assert ran.code == 2 and len(ran.err_lines) == 1, ran.err
    assert "shapes drawer cannot start from an image" in ran.err
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_drawer_with_a_random_vit_b32_at_224_px(tmp_path_factory, name):
    """The full-size guide's shapes (224 px, patch 32): a few steps render and the meta-gradient is finite."""
    clip = _random_vit_b32(tmp_path_factory)
    settings = RenderSettings(size=224, steps_per_stage=2, cutn=1, drawer=name)
    embedding = clip.encode_text(["a red circle"])
    pixels = replay(clip, initial_guides(embedding, 1), settings, random_start(settings, [0], clip.device))
    images = draw(settings, pixels)
    assert images.shape == (1, 3, 224, 224) and torch.isfinite(images).all()
    per_stage = _meta_gradient(clip, replace(settings, steps_per_stage=1), stages=1)
    assert torch.isfinite(per_stage).all() and (per_stage > 0).all(), per_stage


_VIT = {}


def _random_vit_b32(tmp_path_factory):
    """OpenAI's ViT-B/32 architecture with seeded random weights, saved and loaded as a weights file."""
    if "clip" not in _VIT:
        import clip

        from core.models import load_clip
        from core.open_clip_models import OPENAI_ARCHS

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = clip.model.CLIP(**OPENAI_ARCHS["ViT-B/32"])
        file = tmp_path_factory.mktemp("vit") / "ViT-B-32.pt"
        torch.save(model.state_dict(), file)
        _VIT["clip"] = load_clip(str(file), "cpu")
    return _VIT["clip"]


def test_batch_bake_auto_and_evaluate_with_a_drawer(tmp_path):
    """The other scripts take the drawer like any recipe value: a batch bake with pyramid, auto_microwave from
    that store with it, and evaluate.py with fft for every method."""
    bake = ["--model", "scenes", "--size", "24", "--stages", "2", "--steps-per-stage", "2", "--cutn", "1",
            "--meta-steps", "1", "--eval-starts", "1", "--quiet"]
    ran = run_in_process("batch_bake.py", ["a red circle", "a blue square", *bake, "--drawer", "pyramid",
                                           "--no-report"], tmp_path)
    assert ran.code == 0, ran.err
    paths = [load_path(file) for file in sorted((tmp_path / "baked").glob("*.pt"))]
    assert len(paths) == 2 and all(path.recipe["drawer"] == "pyramid" for path in paths)
    ran = run_in_process("auto_microwave.py", ["a green circle", "--model", "scenes", "--size", "24", "--quiet",
                                                 "--drawer", "pyramid"],
                         tmp_path)
    assert ran.code == 0, ran.err
    (png,) = (tmp_path / "outputs").glob("auto-*.png")
    assert json.loads(read_png_metadata(png)["recipe"])["drawer"] == "pyramid"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square on the right\n")
    ran = run_in_process("evaluate.py", [str(prompts), *bake, "--judge", "scenes-judge", "--seeds", "1",
                                         "--drawer", "fft", "--store", str(tmp_path / "fft-store")], tmp_path)
    assert ran.code == 0, ran.err
    assert "| microwave |" in ran.out and "| auto |" in ran.out
    assert all(load_path(file).recipe["drawer"] == "fft" for file in (tmp_path / "fft-store").glob("*.pt"))
