"""The same seeds give the same images, files and messages: a few runs of the scripts (in this process,
tiny model, 16 px) compared with what they gave when the golden files in tests/data/golden/ were recorded.

Recorded before the job-layer refactor (issue 18) so that it shows the refactor changed nothing a user
sees. Images are compared within a tolerance a few PNG levels wide (floats differ in the last bits
between CPUs, and a value near a rounding boundary can flip one 8-bit level); a bake's guides within a
hundredth of how far baking moved them from the prompt. Metadata, recipe files and messages (numbers
masked) must be equal.

Regenerate (only when a change of the images is intended): GOLDEN_RECORD=1 pytest tests/test_golden.py
"""
from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch

from conftest import LEGACY, REPO
from core.images import load_image, read_png_metadata

GOLDEN = REPO / "tests" / "data" / "golden"
RECORD = os.environ.get("GOLDEN_RECORD") == "1"
MODEL = ["--model", "tiny", "--device", "cpu", "--quiet"]
IMAGE = [*MODEL, "--recipe", str(GOLDEN / "recipe.yaml"), "--size", "16", "--steps-per-stage", "2", "--cutn", "2",
         "--upscale", "1"]
BAKE = [*MODEL, "--size", "16", "--stages", "2", "--steps-per-stage", "3", "--cutn", "2"]
# One 8-bit level is 1/255; two allow a flipped rounding on top of float noise. The images move far more
# than that from their random start (checked below), so the check still sees any real change.
IMAGE_TOLERANCE = 2.5 / 255
GUIDE_SHARE = 0.01  # of the largest distance a guide moved from the prompt while baking


def run_main(script: str, monkeypatch, capsys, *args: str) -> str:
    """Run a top-level script's main() here, as `python script args` would; returns its stdout."""
    main = runpy.run_path(str(REPO / script), run_name="golden_run")["main"]
    monkeypatch.setattr(sys, "argv", [script, *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    assert exited.value.code in (0, None), captured.err
    return captured.out


def masked(text: str, tmp_path: Path) -> str:
    """Messages with the run's folder and every number masked (they vary in the last digits)."""
    text = text.replace(str(tmp_path), "TMP")
    text = re.sub(r"baking (did not )?paid? off", "baking VERDICT", text)  # decided by the numbers below
    return re.sub(r"[-+]?\d+\.\d+(e[-+]?\d+)?", "#", text)


def check_text(name: str, text: str) -> None:
    golden = GOLDEN / name
    if RECORD:
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), name


def check_image(name: str, png: Path, tmp_path: Path, start_seed: int | None = None) -> None:
    """The PNG's pixels, metadata (folders masked) and recipe file beside it, against the golden ones."""
    image = load_image(png)
    metadata = {key: value.replace(str(tmp_path), "TMP").replace(str(REPO), "REPO")
                for key, value in read_png_metadata(png).items()}
    recipe = png.with_suffix(".yaml")
    if RECORD:
        shutil.copyfile(png, GOLDEN / f"{name}.png")
        (GOLDEN / f"{name}.json").write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")
        if recipe.is_file():
            shutil.copyfile(recipe, GOLDEN / f"{name}.yaml")
    golden = load_image(GOLDEN / f"{name}.png")
    assert image.shape == golden.shape
    difference = (image - golden).abs().max().item()
    assert difference <= IMAGE_TOLERANCE, (name, difference)
    if start_seed is not None:  # the tolerance is small beside how far the run moved the pixels
        start = (torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(start_seed)))
        assert (golden - start).abs().max().item() > 20 * IMAGE_TOLERANCE
    assert metadata == json.loads((GOLDEN / f"{name}.json").read_text()), name
    if (GOLDEN / f"{name}.yaml").is_file() or recipe.is_file():
        assert recipe.read_text() == (GOLDEN / f"{name}.yaml").read_text(), name


@pytest.fixture
def golden_dir():
    GOLDEN.mkdir(parents=True, exist_ok=True)
    return GOLDEN


def test_normal_image_is_unchanged(tmp_path, monkeypatch, capsys, golden_dir):
    out = run_main("normal.py", monkeypatch, capsys, "a red circle on the left", *IMAGE, "--seed", "3",
                   "--out", str(tmp_path / "out"))
    check_text("normal.txt", masked(out, tmp_path))
    check_image("normal", tmp_path / "out" / "normal-a_red_circle_on_the_left.png", tmp_path, start_seed=3)


def test_microwave_of_a_legacy_path_is_unchanged(tmp_path, monkeypatch, capsys, golden_dir):
    legacy = sorted(LEGACY.glob("*.pt"))[0]
    out = run_main("microwave.py", monkeypatch, capsys, "a blue square", str(legacy), "--mix", "0.3", *IMAGE,
                   "--seed", "5", "--out", str(tmp_path / "out"))
    check_text("microwave-legacy.txt", masked(out.replace(str(legacy), "LEGACY"), tmp_path))
    check_image("microwave-legacy", next((tmp_path / "out").glob("microwave-*.png")), tmp_path, start_seed=5)


def test_auto_microwave_on_the_legacy_store_is_unchanged(tmp_path, monkeypatch, capsys, golden_dir):
    store = tmp_path / "store"
    shutil.copytree(LEGACY, store)
    out = run_main("auto_microwave.py", monkeypatch, capsys, "a cat made of fire", *IMAGE, "--mode", "transfer", "--k", "2",
                   "--seed", "7", "--store", str(store), "--out", str(tmp_path / "out"))
    check_text("auto.txt", masked(out, tmp_path))
    check_image("auto", next((tmp_path / "out").glob("auto-transfer-*.png")), tmp_path, start_seed=7)


def test_bake_guides_and_its_microwave_are_unchanged(tmp_path, monkeypatch, capsys, golden_dir):
    store, out_dir = tmp_path / "store", tmp_path / "out"
    out = run_main("bake.py", monkeypatch, capsys, "a green star", *BAKE, "--meta-steps", "3", "--meta-lr", "0.01",
                   "--eval-starts", "1", "--critic", "none", "--seed", "11", "--store", str(store),
                   "--out", str(out_dir))
    check_text("bake.txt", masked(out, tmp_path))
    path = torch.load(store / "a_green_star.pt", weights_only=True)
    report = next((out_dir / "reports").glob("a_green_star*/index.html"))
    assert report.is_file()
    if RECORD:
        torch.save({"guides": path["guides"], "prompt_embedding": path["prompt_embedding"],
                    "recipe": path["recipe"], "meta": path["metrics"]["meta"]}, GOLDEN / "bake-guides.pt")
    golden = torch.load(GOLDEN / "bake-guides.pt", weights_only=True)
    moved = (golden["guides"] - golden["prompt_embedding"]).abs().max().item()
    assert moved > 1e-3  # the bake moved the guides: the tolerance below is a share of a real movement
    assert (path["guides"] - golden["guides"]).abs().max().item() <= GUIDE_SHARE * moved
    assert (path["prompt_embedding"] - golden["prompt_embedding"]).abs().max().item() <= 1e-5
    assert path["recipe"] == golden["recipe"]
    assert path["metrics"]["meta"] == golden["meta"]
    assert set(path) == {"format", "version", "prompt", "prompt_embedding", "guides", "model_name", "embed_dim",
                         "recipe", "metrics", "created"}

    out = run_main("microwave.py", monkeypatch, capsys, str(store / "a_green_star.pt"), *MODEL,
                   "--upscale", "1", "--seed", "2", "--out", str(out_dir))
    check_text("microwave-baked.txt", masked(out, tmp_path))
    check_image("microwave-baked", out_dir / "microwave-a_green_star.png", tmp_path, start_seed=2)
