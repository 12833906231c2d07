"""What images show, judged by plain pixel statistics (not CLIP), with the shipped scenes model."""
from __future__ import annotations

import pytest

from conftest import run_script
from core.images import load_image
from core.pixel_checks import colour_fraction, dominant_colour

pytestmark = pytest.mark.slow

QUICK = ["--model", "scenes", "--device", "cpu", "--quiet", "--recipe", "quick"]


def test_normal_red_circle_is_red(tmp_path):
    result = run_script("normal.py", "a red circle", *QUICK, "--upscale", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    image = load_image(tmp_path / "outputs" / "normal-a_red_circle.png")
    assert dominant_colour(image) == "red"


def test_normal_blue_square_on_the_left_puts_blue_left(tmp_path):
    result = run_script("normal.py", "a blue square on the left", *QUICK, "--upscale", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    image = load_image(tmp_path / "outputs" / "normal-a_blue_square_on_the_left.png")
    assert colour_fraction(image, "blue", "left") > colour_fraction(image, "blue", "right")


def test_microwave_of_a_baked_green_prompt_is_green(tmp_path):
    baked = run_script("bake.py", "a green star", *QUICK, "--meta-steps", "3", "--eval-starts", "1",
                       "--no-report", cwd=tmp_path)
    assert baked.returncode == 0, baked.stderr[-1500:]
    result = run_script("microwave.py", "baked/a_green_star.pt", *QUICK, "--upscale", "1", "--seed", "7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    image = load_image(tmp_path / "outputs" / "microwave-a_green_star.png")
    assert dominant_colour(image) == "green"
