"""Fast tests of the drawn scenes, the shipped scenes CLIPs and the pixel checks (CPU, seeded)."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from core import pixel_checks, scenes
from core.scenes_clip import SHIPPED, load_scenes_clip, read_scenes_clip_file
from core.scenes_eval import zero_shot_accuracy

# A seed no training run uses (training data: seeds 0-3, 7, 10, 11, 20, 30-34, 40-42; training checks on 999999).
HELD_OUT_SEED = 2024
SCENES_PER_ATTRIBUTE = 150
TARGETS = {"colour": 0.95, "shape": 0.90, "position": 0.90, "relation": 0.80}


# ----------------------------------------------------------------------------------------------- generator


def test_vocabulary_sizes():
    assert len(scenes.COLOURS) >= 8
    assert len(scenes.SHAPES) >= 6
    assert set(scenes.POSITIONS) == {"left", "right", "top", "bottom", "center"}
    assert set(scenes.SIZES) == {"small", "large"}
    # Object colours are saturated, backgrounds are grey: they can never be equal.
    assert not set(scenes.COLOURS.values()) & set(scenes.BACKGROUNDS.values())


def test_make_batch_is_deterministic():
    images, captions, drawn = scenes.make_batch(4, seed=0, size=32)
    images_again, captions_again, drawn_again = scenes.make_batch(4, seed=0, size=32)
    assert torch.equal(images, images_again)
    assert captions == captions_again
    assert drawn == drawn_again
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_make_batch_expected_values():
    images, captions, drawn = scenes.make_batch(4, seed=0, size=32)
    assert captions == [
        "an image of a yellow triangle at the left",
        "a drawing of a blue star in the middle",
        "a drawing of an orange hexagon above a blue star",
        "a picture of a purple triangle and a pink hexagon",
    ]
    first = drawn[0].objects[0]
    assert (first.colour, first.shape, first.size, first.position) == ("yellow", "triangle", "small", "left")
    assert drawn[0].background == "gray"
    expected_slice = torch.tensor([[0.9412, 0.9412, 0.9412, 0.6667],
                                   [0.8627, 0.8627, 0.8627, 0.6373],
                                   [0.1176, 0.1176, 0.1176, 0.3578]])
    assert torch.allclose(images[0, :, 16, 8:12], expected_slice, atol=1e-4)


def test_different_seeds_differ():
    images_a, captions_a, _ = scenes.make_batch(4, seed=0, size=32)
    images_b, captions_b, _ = scenes.make_batch(4, seed=1, size=32)
    assert not torch.equal(images_a, images_b)
    assert captions_a != captions_b


def test_render_any_size_is_antialiased():
    obj = scenes.SceneObject("red", "circle", "large", "center", (0.5, 0.5), 0.2)
    scene = scenes.Scene((obj,), "black")
    for size in (17, 48, 96):
        image = scenes.render_scene(scene, size)
        assert image.shape == (3, size, size)
    image = scenes.render_scene(scene, 48)
    red = image[0]
    # Centre is pure object colour, corner pure background, and the edge has in-between values.
    assert red[24, 24].item() == pytest.approx(230 / 255, abs=1e-6)
    assert red[0, 0].item() == pytest.approx(12 / 255, abs=1e-6)
    in_between = ((red > 13 / 255 + 1e-3) & (red < 230 / 255 - 1e-3)).sum().item()
    assert in_between > 0


def test_captions_name_the_scene():
    rng = np.random.default_rng(5)
    for _ in range(50):
        scene = scenes.sample_scene(rng)
        text = scenes.caption(scene, rng)
        if len(scene.objects) == 1:
            assert scene.objects[0].colour in text and scene.objects[0].shape in text
        else:
            first, second = scene.objects
            assert first.colour != second.colour
            assert first.colour in text or second.colour in text


def test_relation_caption_matches_geometry():
    rng = np.random.default_rng(7)
    for _ in range(30):
        scene = scenes.sample_scene(rng, n_objects=2)
        first, second = scene.objects
        if scene.relation == "to the left of":
            assert first.centre[0] < second.centre[0]
        elif scene.relation == "to the right of":
            assert first.centre[0] > second.centre[0]
        elif scene.relation == "above":
            assert first.centre[1] < second.centre[1]  # y grows downwards
        else:
            assert scene.relation == "below" and first.centre[1] > second.centre[1]
        swapped = scenes.vary_one_attribute(scene, rng, "swap")
        assert swapped.objects[0].centre == second.centre
        assert swapped.relation == scenes.OPPOSITE_RELATION[scene.relation]


def test_opposite_relation_swaps_the_positions():
    assert scenes.OPPOSITE_RELATION["to the left of"] == "to the right of"
    assert scenes.OPPOSITE_RELATION["above"] == "below"
    for relation, opposite in scenes.OPPOSITE_RELATION.items():
        assert scenes.RELATIONS[opposite] == scenes.RELATIONS[relation][::-1]
        assert scenes.OPPOSITE_RELATION[opposite] == relation


# ----------------------------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def shipped_models():
    return {name: load_scenes_clip(name) for name in SHIPPED}


def test_shipped_models_load_small_and_512(shipped_models):
    for path in SHIPPED.values():
        assert path.stat().st_size <= 20 * 1024 * 1024
    for name, model in shipped_models.items():
        assert model.text_projection.shape[1] == 512
        resolution = model.visual.input_resolution
        assert model.encode_image(torch.zeros(1, 3, resolution, resolution)).shape == (1, 512)
        assert model.context_length == 77
        assert not any(p.requires_grad for p in model.parameters())
        assert not model.training
    guide, judge, critic = (read_scenes_clip_file(name) for name in ("scenes", "scenes-judge", "scenes-critic"))
    # the judge is another architecture and seed than the guide and the critic, which help baking
    assert len({str(model["arch"]) for model in (guide, judge, critic)}) == 3
    assert len({model["training"]["seed"] for model in (guide, judge, critic)}) == 3


def test_saved_model_loads_back_and_leaves_no_temporary_file(tmp_path, shipped_models):
    from core.scenes_clip import save_scenes_clip

    payload = read_scenes_clip_file("scenes-critic")
    file = tmp_path / "copy.pt"
    save_scenes_clip(shipped_models["scenes-critic"], payload["arch"], file, payload["token_ids"].tolist(),
                     payload["training"])
    assert [path.name for path in tmp_path.iterdir()] == ["copy.pt"]
    copy = load_scenes_clip(file)
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(),
                                                  shipped_models["scenes-critic"].state_dict().values()))


def test_shipped_model_embeds_text_and_images(shipped_models):
    import clip
    from core.models import normalise_images

    model = shipped_models["scenes"]
    images, captions, _ = scenes.make_batch(2, seed=3, size=model.visual.input_resolution)
    with torch.no_grad():
        image_features = model.encode_image(normalise_images(images))
        text_features = model.encode_text(clip.tokenize(captions))
    assert image_features.shape == (2, 512) and text_features.shape == (2, 512)
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()


# Measured on HELD_OUT_SEED, SCENES_PER_ATTRIBUTE scenes each (CPU). Deterministic: seeded scenes, fixed weights.
MEASURED = {
    # the guide, after its adversarial stage (README): 1.0 on shape before it
    "scenes": {"colour": 1.0, "shape": 0.92, "position": 1.0, "relation": 1.0},
    # the judge, after its shape-twin stages (README): 0.933 on shape before them
    "scenes-judge": {"colour": 1.0, "shape": 1.0, "position": 1.0, "relation": 1.0},
    "scenes-critic": {"colour": 1.0, "shape": 0.880, "position": 1.0, "relation": 1.0},
    # trained on core/third_scenes.py only: these drawings are another renderer's (README)
    "scenes-judge-3": {"colour": 1.0, "shape": 0.893, "position": 1.0, "relation": 1.0},
}
# Targets a shipped model does not reach (strict, so a better model shows up). The critic is smaller and
# trained for less time; it only has to agree with other models on what an image shows.
KNOWN_MISSES = {("scenes-critic", "shape")}


@pytest.fixture(scope="module")
def held_out_accuracy(shipped_models):
    return {name: zero_shot_accuracy(model, n=SCENES_PER_ATTRIBUTE, seed=HELD_OUT_SEED)
            for name, model in shipped_models.items()}


def test_zero_shot_accuracy_matches_measured(held_out_accuracy):
    for name, expected in MEASURED.items():
        for attribute, value in expected.items():
            assert held_out_accuracy[name][attribute] == pytest.approx(value, abs=0.02), (name, attribute)


@pytest.mark.parametrize("name, attribute", [
    pytest.param(name, attribute, marks=pytest.mark.xfail(strict=True, reason="below target, see MEASURED"))
    if (name, attribute) in KNOWN_MISSES else (name, attribute)
    for name in ("scenes", "scenes-judge", "scenes-critic") for attribute in TARGETS
])
def test_zero_shot_accuracy_meets_target(held_out_accuracy, name, attribute):
    assert held_out_accuracy[name][attribute] >= TARGETS[attribute]


# ----------------------------------------------------------------------------------------------- pixel checks


def test_dominant_colour_recovers_the_drawn_colour():
    rng = np.random.default_rng(11)
    noise_generator = torch.Generator().manual_seed(11)
    for _ in range(40):
        scene = scenes.sample_scene(rng, n_objects=1)
        image = scenes.render_scene(scene, 48)
        noisy = (image + 0.15 * torch.randn(image.shape, generator=noise_generator)).clamp(0, 1)
        assert pixel_checks.dominant_colour(image) == scene.objects[0].colour
        assert pixel_checks.dominant_colour(noisy) == scene.objects[0].colour


def test_dominant_colour_of_plain_backgrounds_is_none():
    for grey in (0.0, 0.5, 1.0):
        assert pixel_checks.dominant_colour(torch.full((3, 32, 32), grey)) is None


def test_colour_in_half_recovers_the_side():
    rng = np.random.default_rng(12)
    noise_generator = torch.Generator().manual_seed(12)
    checked = 0
    for _ in range(40):
        scene = scenes.sample_scene(rng, n_objects=1)
        obj = scene.objects[0]
        if obj.position == "center":
            continue
        image = scenes.render_scene(scene, 48)
        noisy = (image + 0.15 * torch.randn(image.shape, generator=noise_generator)).clamp(0, 1)
        opposite = pixel_checks.OPPOSITE_HALF[obj.position]
        assert pixel_checks.colour_in_half(noisy, obj.colour, obj.position)
        assert not pixel_checks.colour_in_half(noisy, obj.colour, opposite)
        checked += 1
    assert checked == 36  # of 40 scenes, 4 are centred


def test_colour_fraction_of_a_known_scene():
    blue_square = scenes.SceneObject("blue", "square", "large", "left", (0.25, 0.5), 0.2)
    red_circle = scenes.SceneObject("red", "circle", "small", "right", (0.75, 0.5), 0.12)
    image = scenes.render_scene(scenes.Scene((blue_square, red_circle), "white", "to the left of"), 64)
    # The square is 0.34 x 0.34 of the image side: about 11.6 % of all pixels, 23 % of the left half.
    assert pixel_checks.colour_fraction(image, "blue") == pytest.approx(0.34 ** 2, abs=0.01)
    assert pixel_checks.colour_fraction(image, "blue", "left") == pytest.approx(2 * 0.34 ** 2, abs=0.02)
    assert pixel_checks.colour_fraction(image, "blue", "right") == 0.0
    assert pixel_checks.colour_in_half(image, "blue", "left")
    assert pixel_checks.colour_in_half(image, "red", "right")
    assert not pixel_checks.colour_in_half(image, "red", "top")  # centred vertically: neither half has more
    assert pixel_checks.dominant_colour(image) == "blue"
    assert pixel_checks.colour_fraction(image, "green") == 0.0


def test_vary_one_attribute_changes_exactly_one_thing():
    rng = np.random.default_rng(13)
    scene = scenes.sample_scene(rng, n_objects=1)
    for attribute in ("colour", "shape", "size", "position", "background"):
        varied = scenes.vary_one_attribute(scene, rng, attribute)
        before, after = dataclasses.asdict(scene), dataclasses.asdict(varied)
        names = ("colour", "shape", "size", "position")
        changed = [n for n in names if before["objects"][0][n] != after["objects"][0][n]]
        changed += ["background"] if scene.background != varied.background else []
        assert changed == [attribute]


def test_training_writes_to_its_arch_file_and_replaces_a_file_only_when_told(tmp_path, monkeypatch):
    from core.errors import UserError
    from core.train_scenes_clip import DEFAULT_OUT, output_path

    with pytest.raises(UserError, match="scenes-judge.pt already exists.*--overwrite"):
        output_path(str(SHIPPED["scenes-judge"]), "scenes-judge", overwrite=False)  # the shipped judge is safe
    monkeypatch.chdir(tmp_path)
    assert output_path(DEFAULT_OUT, "scenes-judge", overwrite=False) == "models/scenes-judge.pt"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "scenes-judge.pt").write_bytes(b"weights")
    with pytest.raises(UserError, match="--overwrite"):
        output_path(DEFAULT_OUT, "scenes-judge", overwrite=False)
    assert output_path(DEFAULT_OUT, "scenes-judge", overwrite=True) == "models/scenes-judge.pt"


def _twin_differences(scenes_in_batch: list[scenes.Scene]) -> list[set[str]]:
    """For each twin of a `training_batch`, the attributes in which it differs from its base scene."""
    half = len(scenes_in_batch) // 2
    differences = []
    for base, twin in zip(scenes_in_batch[:half], scenes_in_batch[half:]):
        changed = {name for a, b in zip(base.objects, twin.objects) for name in ("colour", "shape", "size")
                   if getattr(a, name) != getattr(b, name)}
        changed |= {"place"} if [o.position for o in base.objects] != [o.position for o in twin.objects] else set()
        changed |= {"background"} if base.background != twin.background else set()
        differences.append(changed)
    return differences


def test_shape_twins_share_sets_how_many_twins_differ_in_shape():
    from core.train_scenes_clip import training_batch

    _, captions, batch = training_batch(np.random.default_rng(5), 64, 32, shape_twins=1.0)
    assert all(changed == {"shape"} for changed in _twin_differences(batch))
    assert all(base != twin for base, twin in zip(captions[:32], captions[32:]))
    _, _, batch = training_batch(np.random.default_rng(5), 64, 32)
    shape_only = sum(changed == {"shape"} for changed in _twin_differences(batch))
    assert 0 < shape_only < 16  # one twin in six, drawn at random: about 5 of 32


def test_no_shape_twins_draws_the_batches_of_earlier_models():
    from core.train_scenes_clip import training_batch

    images, captions, batch = training_batch(np.random.default_rng(6), 8, 32, shape_twins=0.0)
    rng = np.random.default_rng(6)  # the batch as drawn before the option existed
    base = [scenes.sample_scene(rng) for _ in range(4)]
    assert batch == base + [scenes.vary_one_attribute(scene, rng) for scene in base]


def test_with_duplicate_adds_a_same_colour_object_on_the_opposite_side():
    rng = np.random.default_rng(21)
    for position, opposite, relation in (("left", "right", "to the left of"), ("top", "bottom", "above"),
                                         ("bottom", "top", "below"), ("right", "left", "to the right of")):
        only = scenes.place_object(rng, "red", "star", "large", position)
        duplicate = scenes.with_duplicate(scenes.Scene((only,), "black"), rng)
        first, second = duplicate.objects
        assert first == only and second.colour == "red" and second.position == opposite
        assert duplicate.relation == relation and duplicate.background == "black"
        # the relation's geometry holds: the first object is on its named side of the second
        axis = 0 if position in ("left", "right") else 1
        assert (first.centre[axis] < second.centre[axis]) == (position in ("left", "top"))
    assert scenes.with_duplicate(scenes.sample_scene(rng, n_objects=2), rng) is None
    centred = scenes.Scene((scenes.place_object(rng, "red", "star", "large", "center"),), "black")
    assert scenes.with_duplicate(centred, rng) is None


def test_duplicate_twins_are_captioned_by_their_relation():
    from core.train_scenes_clip import training_batch

    _, captions, batch = training_batch(np.random.default_rng(7), 64, 32, duplicate_twins=1.0)
    half = len(batch) // 2
    duplicates = [row for row, (base, twin) in enumerate(zip(batch[:half], batch[half:]))
                  if len(base.objects) == 1 and len(twin.objects) == 2]
    assert len(duplicates) >= 5  # every one-object base not in the centre: about 13 of 32
    for row in duplicates:
        twin = batch[half + row]
        assert twin.objects[0] == batch[row].objects[0] and twin.objects[1].colour == twin.objects[0].colour
        assert captions[half + row] == scenes.relation_caption(twin.objects[0], twin.relation, twin.objects[1])
    plain = training_batch(np.random.default_rng(7), 64, 32)[2]
    assert not any(len(b.objects) == 1 and len(t.objects) == 2 for b, t in zip(plain[:half], plain[half:]))


@pytest.mark.slow  # two subprocesses
def test_a_training_stage_records_its_settings_on_top_of_the_earlier_stage(tmp_path):
    """Two tiny stages of `python -m core.train_scenes_clip`: the second records its shape twins and
    varied drawings, and keeps the first stage's record inside its own."""
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    common = [sys.executable, "-m", "core.train_scenes_clip", "--arch", "scenes-critic", "--steps", "2",
              "--batch-size", "4", "--warmup", "1", "--eval-n", "2"]
    for args in ([*common, "--seed", "1", "--out", str(first)],
                 [*common, "--seed", "2", "--shape-twins", "0.5", "--vary-drawing", "--duplicate-twins", "0.25",
                  "--init-from", str(first), "--out", str(second)]):
        result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    record = read_scenes_clip_file(second)["training"]
    assert record["seed"] == 2 and record["shape_twins"] == 0.5 and record["vary_drawing"] is True
    assert record["duplicate_twins"] == 0.25
    assert record["init_from"]["seed"] == 1 and "shape_twins" not in record["init_from"]
    assert "duplicate_twins" not in record["init_from"]
    assert record["steps_done"] == 2 and record["batch_size"] == 4
