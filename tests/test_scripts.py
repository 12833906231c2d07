"""End to end: the scripts run as a user runs them (subprocesses, tiny model, CPU, small settings)."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from conftest import LEGACY, run_script
from core.images import load_image, read_png_metadata

pytestmark = pytest.mark.slow

COMMON = ["--model", "tiny", "--device", "cpu", "--quiet", "--size", "32", "--cutn", "2"]
FAST = COMMON + ["--upscale", "1"]  # the scripts that save an image
FAST_BAKE = COMMON + ["--steps-per-stage", "2", "--stages", "2", "--meta-steps", "2", "--eval-starts", "1"]
SCRIPTS = ["bake.py", "microwave.py", "auto_microwave.py", "normal.py", "batch_bake.py"]


def ok(result):
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def one_line_error(result):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0], result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory with one prompt baked into its store."""
    directory = tmp_path_factory.mktemp("run")
    result = ok(run_script("bake.py", "a red circle", *FAST_BAKE, "--seed", "1", cwd=directory))
    assert "baked path" in result.stdout and "normal run" in result.stdout
    assert (directory / "baked" / "a_red_circle.pt").is_file()
    return directory


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_defaults(script):
    result = ok(run_script(script, "--help"))
    for option in ("--model", "--device", "--seed", "--out", "--store"):
        assert option in result.stdout
    assert "default:" in result.stdout


def test_bake_records_recipe_and_metrics(workdir):
    data = torch.load(workdir / "baked" / "a_red_circle.pt", weights_only=True)
    assert data["prompt"] == "a red circle"
    assert data["guides"].shape == (2, 512)
    assert data["recipe"]["size"] == 32 and data["recipe"]["steps_per_stage"] == 2
    assert set(data["metrics"]) >= {"baked_loss", "normal_loss", "curve"}
    assert len(data["metrics"]["curve"]) == 2
    report = workdir / "outputs" / "reports" / "a_red_circle"
    assert {"index.html", "curve.png", "animation.gif", "stage-0.png", "stage-1.png"} <= {p.name for p in report.iterdir()}


def test_bake_refuses_to_rebake_without_overwrite(workdir):
    line = one_line_error(run_script("bake.py", "a red circle", *FAST_BAKE, cwd=workdir))
    assert "already baked" in line


def test_microwave_saves_png_with_metadata_and_never_overwrites(workdir):
    first = ok(run_script("microwave.py", "baked/a_red_circle.pt", *FAST, "--seed", "3", cwd=workdir))
    second = ok(run_script("microwave.py", "baked/a_red_circle.pt", *FAST, "--seed", "3", cwd=workdir))
    file_one = workdir / first.stdout.split("saved ")[-1].strip()
    file_two = workdir / second.stdout.split("saved ")[-1].strip()
    assert file_one.name == "microwave-a_red_circle.png" and file_two.name == "microwave-a_red_circle-1.png"
    metadata = read_png_metadata(file_one)
    assert metadata["prompt"] == "a red circle" and metadata["seed"] == "3" and metadata["model"] == "tiny"
    assert json.loads(metadata["recipe"])["size"] == 32
    # same seed, same image
    assert torch.equal(load_image(file_one), load_image(file_two))


def test_microwave_with_prompt_blends(workdir):
    result = ok(run_script("microwave.py", "a blue square", "baked/a_red_circle.pt", *FAST, "--mix", "0.7",
                           cwd=workdir))
    assert "microwave-a_blue_square" in result.stdout


def test_microwave_frames_and_gif(workdir):
    ok(run_script("microwave.py", "baked/a_red_circle.pt", *FAST, "--save-every", "2", "--gif",
                  "--out", "frames", cwd=workdir))
    names = sorted(path.name for path in (workdir / "frames").iterdir())
    assert names == ["microwave-a_red_circle-step00002.png", "microwave-a_red_circle-step00004.png",
                     "microwave-a_red_circle.gif", "microwave-a_red_circle.png", "microwave-a_red_circle.yaml"]


def test_normal_reproducible_from_seed(tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "normal-a_green_star.yaml").write_text("a leftover recipe, its image deleted")
    for seed in ("5", "5", "6"):
        ok(run_script("normal.py", "a green star", *FAST, "--steps", "4", "--seed", seed, cwd=tmp_path))
    same = [load_image(tmp_path / "outputs" / name) for name in
            ("normal-a_green_star.png", "normal-a_green_star-1.png", "normal-a_green_star-2.png")]
    assert torch.equal(same[0], same[1])
    assert not torch.equal(same[0], same[2])
    # Each image's recipe is saved beside it, and never over a file that was there before.
    assert (tmp_path / "outputs" / "normal-a_green_star.yaml").read_text() == "a leftover recipe, its image deleted"
    assert len(list((tmp_path / "outputs").glob("normal-a_green_star*.yaml"))) == 4


def test_image_as_target(tmp_path):
    from core.images import save_png
    from core.targets import image_label

    target = save_png(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)), tmp_path, "photo", {})
    result = ok(run_script("normal.py", str(target), *FAST, "--steps", "2", cwd=tmp_path))
    label = image_label(str(target))  # keyed by its content: photo-<8 hex digits>.png
    assert re.fullmatch(r"photo-[0-9a-f]{8}\.png", label)
    assert f"normal-{label[:-4]}.png" in result.stdout
    assert read_png_metadata(tmp_path / "outputs" / f"normal-{label[:-4]}.png")["prompt"] == label


def test_auto_microwave_on_legacy_store(tmp_path):
    store = tmp_path / "legacy"
    shutil.copytree(LEGACY, store)
    args = ["a yellow bus", *FAST, "--steps-per-stage", "1", "--store", str(store)]
    first = ok(run_script("auto_microwave.py", *args, "--mode", "mean", cwd=tmp_path))
    used = [line for line in first.stdout.splitlines() if line.startswith("using")]
    assert len(used) == 2
    assert list((store / ".cache").iterdir()), "prompt embeddings are cached in the store"
    second = ok(run_script("auto_microwave.py", *args, "--mode", "splice", "--k", "3", cwd=tmp_path))
    assert len([line for line in second.stdout.splitlines() if line.startswith("using")]) == 3
    assert (tmp_path / "outputs" / "auto-splice-a_yellow_bus.png").is_file()


def test_batch_bake_skips_goes_on_and_summarises(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# shapes\na red circle\n\n" + "word " * 90 + "\na blue square\n  # an indented comment\n")
    first = run_script("batch_bake.py", str(prompts), *FAST_BAKE, cwd=tmp_path)
    assert first.returncode == 1  # one prompt failed, the others were baked
    assert "baked 2, skipped 0" in first.stdout and "failed 1" in first.stdout
    assert sorted(path.name for path in (tmp_path / "baked").glob("*.pt")) == ["a_blue_square.pt", "a_red_circle.pt"]
    prompts.write_text("a red circle\na blue square\n")
    second = ok(run_script("batch_bake.py", str(prompts), *FAST_BAKE, cwd=tmp_path))
    assert "baked 0, skipped 2" in second.stdout
    reports = tmp_path / "outputs" / "reports"
    assert (reports / "batch.html").is_file() and (reports / "a_red_circle" / "index.html").is_file()
    # Baked again into another store, writing to the same outputs: the new report gets a folder of its own,
    # and the batch page links that one, not the first bake's.
    # An image target is listed and linked under its key (its file name and content).
    from core.images import save_png
    from core.targets import image_label

    image = save_png(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)), tmp_path, "photo", {})
    ok(run_script("batch_bake.py", "a red circle", str(image), *FAST_BAKE, "--store", "other", cwd=tmp_path))
    assert (reports / "a_red_circle-1" / "index.html").is_file()
    third_page = (reports / "batch-2.html").read_text()
    assert 'href="a_red_circle-1/index.html"' in third_page and "a_red_circle/index.html" not in third_page
    assert f'href="{image_label(str(image))}/index.html"' in third_page


def test_user_errors_are_one_line(tmp_path):
    assert "empty prompt" in one_line_error(run_script("normal.py", "  ", *FAST, cwd=tmp_path))
    assert "unknown model" in one_line_error(run_script("normal.py", "a cat", "--model", "nope", cwd=tmp_path))
    assert "77 tokens" in one_line_error(run_script("normal.py", "word " * 90, *FAST, cwd=tmp_path))
    assert "missing.pt" in one_line_error(run_script("microwave.py", "missing.pt", *FAST, cwd=tmp_path))
    (tmp_path / "corrupt.pt").write_bytes(b"not a torch file")
    assert "corrupt.pt" in one_line_error(run_script("microwave.py", "corrupt.pt", *FAST, cwd=tmp_path))
    assert "not found" in one_line_error(run_script("normal.py", "nothing.png", *FAST, cwd=tmp_path))
    assert "unknown device" in one_line_error(run_script("normal.py", "a cat", "--device", "tpu", cwd=tmp_path))


def test_dim_mismatch_names_both(tmp_path):
    from core.paths import BakedPath
    from core.store import save_path

    save_path(tmp_path / "store", BakedPath(prompt="a small path", guides=torch.randn(3, 256),
                                            prompt_embedding=torch.randn(256), model_name="RN50x4-like",
                                            embed_dim=256))
    line = one_line_error(run_script("microwave.py", str(tmp_path / "store" / "a_small_path.pt"), *FAST,
                                     cwd=tmp_path))
    assert "256" in line and "512" in line and "tiny" in line


def test_wandb_offline_logs_for_real(tmp_path):
    result = ok(run_script("normal.py", "a red circle", *FAST, "--steps", "3", "--wandb", cwd=tmp_path,
                           env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, result.stderr
    assert list(runs[0].glob("*.wandb")), "the run's log file is written"


def test_microwave_replays_a_legacy_path(tmp_path):
    result = ok(run_script("microwave.py", str(LEGACY / "a_lemon.pt"), *FAST, "--steps-per-stage", "1",
                           cwd=tmp_path))
    assert "baked with ViT-B/32" in result.stderr  # a notice, not an error: same embed dim
    metadata = read_png_metadata(tmp_path / "outputs" / "microwave-a_lemon.png")
    assert metadata["prompt"] == "a lemon" and json.loads(metadata["recipe"])["stages"] == 10
