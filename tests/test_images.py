"""Tests for core/images.py: unique names, quantising, PNG metadata, GIF frames, atomic writes."""

import json
import os
import threading

import pytest
import torch
from PIL import Image

from core.errors import UserError
from core.files import unique_dir, unique_path
from core.images import quantize, read_png_metadata, save_gif, save_png, to_pil


def colour_image():
    """A 2x2 image: red, green / blue, grey 0.2 (51 of 255)."""
    image = torch.zeros(3, 2, 2)
    image[0, 0, 0] = 1.0
    image[1, 0, 1] = 1.0
    image[2, 1, 0] = 1.0
    image[:, 1, 1] = 0.2
    return image


EXPECTED_PIXELS = {(0, 0): (255, 0, 0), (1, 0): (0, 255, 0), (0, 1): (0, 0, 255), (1, 1): (51, 51, 51)}


def test_unique_path_numbering(tmp_path):
    names = [unique_path(tmp_path / "out", "cat").name for _ in range(4)]
    assert names == ["cat.png", "cat-1.png", "cat-2.png", "cat-3.png"]
    assert unique_path(tmp_path / "out", "cat", ".gif").name == "cat.gif"
    # Reserved names exist (empty) so nobody else can take them.
    assert all((tmp_path / "out" / n).stat().st_size == 0 for n in names)


def test_unique_dir_numbering_keeps_existing_folders(tmp_path):
    (tmp_path / "out" / "evaluation").mkdir(parents=True)
    (tmp_path / "out" / "evaluation" / "results.csv").write_text("mine")
    names = [unique_dir(tmp_path / "out", "evaluation").name for _ in range(2)]
    assert names == ["evaluation-1", "evaluation-2"]
    assert (tmp_path / "out" / "evaluation" / "results.csv").read_text() == "mine"
    assert all((tmp_path / "out" / name).is_dir() for name in names)


def test_unique_path_does_not_reuse_existing(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"mine")
    (tmp_path / "cat-1.png").write_bytes(b"mine too")
    assert unique_path(tmp_path, "cat").name == "cat-2.png"
    assert (tmp_path / "cat.png").read_bytes() == b"mine"


def test_unique_path_concurrent_callers_get_distinct_names(tmp_path):
    results = []
    barrier = threading.Barrier(8)

    def reserve():
        barrier.wait()
        results.append(unique_path(tmp_path, "x").name)

    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(["x.png"] + [f"x-{i}.png" for i in range(1, 8)])


@pytest.mark.parametrize("stem", ["", "..", "../x", "a/b"])
def test_unique_path_rejects_non_stems(tmp_path, stem):
    with pytest.raises(ValueError):
        unique_path(tmp_path, stem)


def test_quantize_levels():
    x = torch.tensor([0.0, 0.03, 0.35, 0.98, 1.0, 1.2, -0.1])
    expected = torch.tensor([0, 0, 5, 15, 15, 15, 0]) / 15  # out-of-range values clamp first
    assert torch.equal(quantize(x, 16), expected)
    assert torch.equal(quantize(torch.tensor([0.2, 0.8]), 2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError):
        quantize(x, 1)


def test_quantize_values_are_on_the_grid():
    q = quantize(torch.rand(3, 8, 8), 16)
    assert torch.allclose(q * 15, torch.round(q * 15), atol=1e-6)
    assert len(torch.unique(torch.round(q * 15))) <= 16


def test_to_pil_upscales_with_nearest_neighbour():
    pil = to_pil(colour_image(), upscale=3)
    assert pil.mode == "RGB" and pil.size == (6, 6)
    for (x, y), rgb in EXPECTED_PIXELS.items():
        for dx in range(3):
            for dy in range(3):
                assert pil.getpixel((3 * x + dx, 3 * y + dy)) == rgb
    with pytest.raises(ValueError):
        to_pil(torch.zeros(1, 3, 2, 2))


def test_png_metadata_round_trip(tmp_path):
    metadata = {
        "prompt": "a café at night ☕",
        "seed": 7,
        "model": "ViT-B/32",
        "recipe": {"lr": 0.05, "steps": [10, 20], "augment": True},
    }
    file = save_png(colour_image(), tmp_path, "cafe", metadata, upscale=2)
    assert file == tmp_path / "cafe.png"
    read = read_png_metadata(file)
    assert read["prompt"] == "a café at night ☕"
    assert read["seed"] == "7"
    assert read["model"] == "ViT-B/32"
    assert json.loads(read["recipe"]) == metadata["recipe"]
    with Image.open(file) as image:
        assert image.size == (4, 4)
        assert image.convert("RGB").getpixel((2, 2)) == (51, 51, 51)
    # A second save never overwrites, and no temporary files are left behind.
    assert save_png(colour_image(), tmp_path, "cafe", {}).name == "cafe-1.png"
    assert sorted(os.listdir(tmp_path)) == ["cafe-1.png", "cafe.png"]


def test_failed_png_write_frees_the_name(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        save_png(colour_image(), tmp_path, "x", {"prompt": "x"})
    assert os.listdir(tmp_path) == []


def test_gif_has_all_frames(tmp_path):
    frames = [torch.full((3, 4, 4), value) for value in (0.0, 0.25, 0.5, 1.0)]
    file = save_gif(frames, tmp_path, "anim", upscale=2, duration_ms=80)
    assert file == tmp_path / "anim.gif"
    with Image.open(file) as gif:
        assert gif.format == "GIF" and gif.n_frames == 4 and gif.size == (8, 8)
        assert gif.info["duration"] == 80
    assert save_gif(frames, tmp_path, "anim").name == "anim-1.gif"
    with pytest.raises(ValueError):
        save_gif([], tmp_path, "none")


def test_read_png_metadata_of_bad_files(tmp_path):
    with pytest.raises(UserError, match="no image"):
        read_png_metadata(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UserError, match="not an image"):
        read_png_metadata(tmp_path / "text.png")
    gif = save_gif([torch.zeros(3, 2, 2)], tmp_path, "g")
    with pytest.raises(UserError, match="not a PNG"):
        read_png_metadata(gif)
