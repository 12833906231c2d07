"""The guide-gap diagnostic (core/guide_gap.py) with the shipped guide, a few steps on the CPU."""

import math
from dataclasses import replace

import torch

from core import scenes
from core.guide_gap import guide_gap, markdown, one_object_scenes
from core.models import load_clip
from core.recipes import load_recipe
from core.render import RenderSettings


def test_each_shape_once_with_the_prompt_naming_its_scene():
    pairs = one_object_scenes()
    assert sorted(scene.objects[0].shape for _, scene in pairs) == sorted(scenes.SHAPES)
    for prompt, scene in pairs:
        drawn = scene.objects[0]
        assert prompt.endswith(f"{drawn.colour} {drawn.shape}")


def test_gap_rows_are_similarities_of_optimised_and_drawn_images():
    settings = replace(RenderSettings.from_recipe(load_recipe("quick")), steps_per_stage=1, cutn=1)
    torch.manual_seed(0)
    rows = guide_gap(load_clip("scenes", "cpu"), settings, stages=1, n_views=2)
    assert [row["prompt"] for row in rows] == [prompt for prompt, _ in one_object_scenes()]
    for row in rows:
        for key in ("optimised", "drawn"):
            assert math.isfinite(row[key]) and -1 <= row[key] <= 1
    # The guide names what is drawn: a clean drawing is closer to its prompt than a 1-step image from noise.
    assert sum(row["drawn"] for row in rows) > sum(row["optimised"] for row in rows)
    table = markdown(rows)
    assert table.count("\n") == len(rows) + 2 and "| mean |" in table
