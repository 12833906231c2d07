"""core/scene_augment.py: drawings varied in what captions do not speak of, never in what they do."""
from __future__ import annotations

import numpy as np
import torch

from core import pixel_checks, scenes
from core.scene_augment import augment


def _one_object_scenes(count: int, seed: int) -> tuple[torch.Tensor, list[scenes.Scene]]:
    rng = np.random.default_rng(seed)
    drawn = [scenes.sample_scene(rng, n_objects=1) for _ in range(count)]
    return torch.stack([scenes.render_scene(scene, 48) for scene in drawn]), drawn


def test_augment_is_seeded_changes_every_image_and_stays_in_range():
    images, _ = _one_object_scenes(6, seed=0)
    first = augment(images, torch.Generator().manual_seed(1))
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(2)))
    assert first.shape == images.shape and 0 <= first.min() and first.max() <= 1
    change = (first - images).abs().mean(dim=(1, 2, 3))
    assert (change > 0.002).all() and (change < 0.25).all(), change


def test_augment_keeps_the_named_colour_and_side():
    images, drawn = _one_object_scenes(60, seed=3)
    varied = augment(images, torch.Generator().manual_seed(3))
    colours_kept = sides_kept = sided = 0
    for image, scene in zip(varied, drawn):
        obj = scene.objects[0]
        colours_kept += pixel_checks.dominant_colour(image) == obj.colour
        if obj.position != "center":
            sided += 1
            sides_kept += pixel_checks.colour_in_half(image, obj.colour, obj.position)
    # On the clean drawings both checks hold for every scene (tests/test_scenes.py); a varied drawing may
    # lose a small dark object's colour to the blur, rarely.
    assert colours_kept >= 0.95 * len(drawn), colours_kept
    assert sides_kept >= 0.95 * sided, (sides_kept, sided)


def test_a_training_batch_with_varied_drawings_has_the_same_scenes_and_captions():
    from core.train_scenes_clip import training_batch

    plain, captions, batch = training_batch(np.random.default_rng(8), 8, 32)
    varied, varied_captions, varied_batch = training_batch(np.random.default_rng(8), 8, 32, vary_drawing=True)
    assert varied_captions == captions and varied_batch == batch
    assert varied.shape == plain.shape and not torch.allclose(varied, plain, atol=0.02)
