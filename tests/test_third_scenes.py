"""The third scene renderer (core/third_scenes.py): what it draws is what the scene says."""
import colorsys

import numpy as np
import pytest
import torch

from core import scenes, third_scenes


def _one(colour: str, shape: str, position: str, background: str, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    scene = scenes.Scene((scenes.place_object(rng, colour, shape, "large", position),), background)
    return third_scenes.render(scene, 48, rng)


def test_the_same_seed_draws_the_same_image_and_another_seed_another():
    assert torch.equal(_one("red", "star", "left", "gray", 3), _one("red", "star", "left", "gray", 3))
    assert not torch.equal(_one("red", "star", "left", "gray", 3), _one("red", "star", "left", "gray", 4))


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_every_shape_is_inside_at_its_centre_and_outside_far_away(shape):
    rng = np.random.default_rng(1)
    x = np.array([0.0, 0.0, 2.0, -2.0])
    y = np.array([0.05, 0.0, 0.0, 2.0])
    distance = third_scenes.shape_distance(shape, x, y, rng)
    assert distance[0] < 0 and distance[2] > 0.5 and distance[3] > 0.5


def test_polygon_distance_of_a_unit_square_is_exact():
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    x, y = np.array([0.0, 0.5, 3.0, 2.0]), np.array([0.0, 0.0, 0.0, 2.0])
    np.testing.assert_allclose(third_scenes.polygon_distance(x, y, square), [-1.0, -0.5, 2.0, np.sqrt(2)],
                               atol=1e-6)


@pytest.mark.parametrize("colour", list(scenes.COLOURS))
def test_the_object_is_its_colour_and_where_the_scene_puts_it(colour):
    image = _one(colour, "square", "left", "black")
    left, right = image[:, :, :20], image[:, :, 28:]
    assert left.max() > 0.5 and right.max() < 0.3  # the object on the left, the dark background elsewhere
    brightest = image.sum(dim=0).flatten().argmax()
    r, g, b = image.flatten(1)[:, brightest].tolist()
    hue = colorsys.rgb_to_hsv(r, g, b)[0] * 360
    off = abs((hue - third_scenes.HUES[colour] + 180) % 360 - 180)
    assert off <= third_scenes.HUE_SPREAD + 8  # its shade, give or take a rim or gradient


def test_backgrounds_keep_their_brightness_order_and_images_stay_in_range():
    means = [float(_one("red", "circle", "top", name).mean()) for name in ("black", "gray", "white")]
    assert means[0] < means[1] < means[2]
    rng = np.random.default_rng(5)
    images = torch.stack([third_scenes.render(scenes.sample_scene(rng), 32, rng) for _ in range(20)])
    assert images.dtype == torch.float32 and images.shape == (20, 3, 32, 32)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_a_training_batch_can_be_drawn_by_the_third_renderer():
    from core.train_scenes_clip import training_batch

    plain, captions, batch = training_batch(np.random.default_rng(9), 8, 32)
    third, third_captions, third_batch = training_batch(np.random.default_rng(9), 8, 32, renderer="third")
    assert third_batch == batch and third_captions == captions  # the same scenes and captions, drawn otherwise
    assert third.shape == plain.shape
    assert float((third - plain).abs().mean()) > 0.02
