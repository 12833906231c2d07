"""Hostile files (issue 16): prompt files read as written, image targets keyed by their content, one bad
path never spoiling the store, nothing non-finite saved, and a full disk leaving nothing partial."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.errors import DiskFull, UserError
from core.files import write_atomically
from core.models import load_clip
from core.nearest import nearest_paths
from core.paths import BakedPath, load_path
from core.prompt_lists import read_prompt_file, read_prompts
from core.store import list_paths, save_path
from core.targets import image_label, target_label
from inprocess import files_under, run_in_process, written_outside
from test_hostile import BAKE, IMAGE, good_path

# --- prompt files ------------------------------------------------------------------------------------


def test_prompt_files_are_split_at_line_feeds_only(tmp_path):
    file = tmp_path / "prompts.txt"
    file.write_bytes("\ufeffa red circle\r\n# a comment\n  # another\n\na red\x0ccircle\nred\u2028blue\n"
                     "iridescent vaporwave bubbles #digitalart\na\x85b\n".encode("utf-8"))
    assert read_prompt_file(file) == ["a red circle", "a red\x0ccircle", "red\u2028blue",
                                      "iridescent vaporwave bubbles #digitalart", "a\x85b"]


def test_a_prompt_file_that_is_not_utf8_names_its_line(tmp_path):
    file = tmp_path / "prompts.txt"
    file.write_bytes(b"a red circle\n\nca\xe9\n")
    with pytest.raises(UserError, match=r"prompts.txt', line 3: not UTF-8 text"):
        read_prompts([str(file)])


def test_an_over_long_prompt_is_a_prompt_not_an_error():
    assert read_prompts(["x" * 5000]) == ["x" * 5000]  # Path.is_file would raise "File name too long"


def test_a_prompt_file_with_a_bom_bakes_the_prompt_once(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "p.txt").write_bytes("\ufeffa red circle\n".encode("utf-8"))
    first = run_in_process("batch_bake.py", [str(tmp_path / "p.txt"), *BAKE], tmp_path)
    again = run_in_process("batch_bake.py", ["a red circle", *BAKE], tmp_path)
    assert first.code == 0 and again.code == 0, first.err + again.err
    assert [path.prompt for path in list_paths(tmp_path / "store")] == ["a red circle"]
    assert "skipped 1" in again.out


# --- image targets -----------------------------------------------------------------------------------


@pytest.fixture
def reds(tmp_path) -> tuple[Path, Path]:
    """Two images both called red.png, of other colours."""
    for folder, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (32, 32), colour).save(tmp_path / folder / "red.png")
    return tmp_path / "a" / "red.png", tmp_path / "b" / "red.png"


def test_image_targets_are_keyed_by_content(reds, tmp_path):
    first, second = reds
    assert image_label(str(first)) != image_label(str(second))
    assert image_label(str(first)).startswith("red-") and image_label(str(first)).endswith(".png")
    assert target_label(str(first)) == image_label(str(first)) != target_label("red")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "copy.png").write_bytes(first.read_bytes())  # same content, other name: its own stem
    assert image_label(str(tmp_path / "c" / "copy.png")).split("-")[1] == image_label(str(first)).split("-")[1]


def test_two_images_of_one_name_and_the_text_bake_three_paths(reds, tmp_path):
    first, second = reds
    ran = run_in_process("batch_bake.py", [str(first), str(second), "red", *BAKE], tmp_path)
    assert ran.code == 0, ran.err
    prompts = sorted(path.prompt for path in list_paths(tmp_path / "store"))
    assert prompts == sorted([image_label(str(first)), image_label(str(second)), "red"])
    # the key itself is no text prompt: no such file, and no space, so it is refused as a missing image
    refused = run_in_process("bake.py", [image_label(str(first)), *BAKE], tmp_path)
    assert refused.code == 2 and "image file not found" in refused.err


def test_overwrite_never_replaces_another_image_of_the_same_name(reds, tmp_path):
    first, second = reds
    assert run_in_process("bake.py", [str(first), *BAKE], tmp_path).code == 0
    kept = {file.name: file.read_bytes() for file in (tmp_path / "store").glob("*.pt")}
    assert run_in_process("bake.py", [str(second), *BAKE, "--overwrite"], tmp_path).code == 0
    after = {file.name: file.read_bytes() for file in (tmp_path / "store").glob("*.pt")}
    assert len(after) == 2 and all(after[name] == data for name, data in kept.items())


# --- non-finite values and bad files in the store -----------------------------------------------------


def test_nothing_non_finite_is_saved(tmp_path):
    guides = torch.randn(2, 4)
    guides[1, 2] = float("nan")
    path = BakedPath("a red circle", guides, torch.randn(4), "fake", 4)
    with pytest.raises(UserError, match="NaN or infinity"):
        save_path(tmp_path, path)
    path = BakedPath("a red circle", torch.randn(2, 4), torch.randn(4), "fake", 4, metrics={"loss": float("inf")})
    with pytest.raises(UserError, match="metrics.* is inf"):
        save_path(tmp_path, path)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny():
    return load_clip("tiny", "cpu")


def hostile_store(store: Path, clip) -> None:
    """Three good paths, and one path of each bad kind: another size labelled tiny, NaN guides, a NaN prompt
    embedding, infinite guides, a corrupt file."""
    store.mkdir(parents=True)
    for seed, prompt in enumerate(("a red circle", "a blue square", "a green triangle")):
        torch.save(good_path(clip, prompt, seed), store / f"{prompt.replace(' ', '_')}.pt")
    foreign = good_path(clip, "a foreign path")
    foreign["guides"], foreign["prompt_embedding"] = torch.randn(2, 256), torch.randn(256)
    foreign["embed_dim"] = 256
    torch.save(foreign, store / "a_foreign_path.pt")
    for name, key in (("nan_guides", "guides"), ("nan_embedding", "prompt_embedding"), ("inf_guides", "guides")):
        bad = good_path(clip, name)
        bad[key].view(-1)[0] = float("inf") if name.startswith("inf") else float("nan")
        torch.save(bad, store / f"{name}.pt")
    (store / "corrupt.pt").write_bytes(b"\x80\x02garbage")


def test_one_bad_file_never_spoils_the_store(tmp_path, tiny):
    store = tmp_path / "store"
    hostile_store(store, tiny)
    assert [path.prompt for path in list_paths(store, tiny.embed_dim)] == [
        "a blue square", "a green triangle", "a red circle"]
    query = tiny.encode_text(["a red square"])[0]
    found = nearest_paths(store, tiny.name, lambda texts: tiny.encode_text(texts), query, k=10)
    assert sorted(path.prompt for path, _ in found) == ["a blue square", "a green triangle", "a red circle"]
    distances = [distance for _, distance in found]
    assert distances == sorted(distances) and all(d == d for d in distances)


def test_auto_microwave_with_bad_files_and_a_cache_symlink(tmp_path, tiny):
    hostile_store(tmp_path / "store", tiny)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "store" / ".cache")  # the cache must never be followed out of the store
    for _ in range(2):  # the second run: no cache to help either
        ran = run_in_process("auto_microwave.py", ["a red square", *IMAGE, "--k", "3", "--mode", "transfer"], tmp_path)
        assert ran.code == 0, ran.err
        used = sorted(line.split("'")[1] for line in ran.out.splitlines() if line.startswith("using '"))
        assert used == ["a blue square", "a green triangle", "a red circle"]
        assert len(ran.err_lines) == 6 and all(line.startswith("warning: ") for line in ran.err_lines), ran.err
    # predict (the default mode) learns from the same three good paths and skips the same bad files
    ran = run_in_process("auto_microwave.py", ["a red square", *IMAGE], tmp_path)
    assert ran.code == 0, ran.err
    assert "predicting the stage offsets from 3 baked paths" in ran.out
    assert all(line.startswith("warning: ") for line in ran.err_lines), ran.err
    assert list(outside.iterdir()) == []


def test_a_full_cache_is_ignored(tmp_path, tiny):
    hostile_store(tmp_path / "store", tiny)
    (tmp_path / "store" / ".cache").write_text("a file where the cache folder should be")
    ran = run_in_process("auto_microwave.py", ["a red square", *IMAGE], tmp_path)
    assert ran.code == 0, ran.err


# --- a full disk -------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a real 64 KB file system that is full but for a few KB (tmpfs; needs root)."""
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode(errors='replace').strip()}")
    try:
        with open(mount / ".filler", "wb") as handle:
            try:
                handle.write(b"\0" * 60 * 1024)
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_baking_is_one_line_and_leaves_nothing(full_disk, tmp_path):
    before = files_under(tmp_path)
    ran = run_in_process("batch_bake.py", ["a red circle", "a blue square", *BAKE, "--store", str(full_disk)],
                         tmp_path)
    assert ran.code == 2 and len(ran.err_lines) == 1, ran.err
    assert ran.err_lines[0].startswith("error: no space left on the device to write"), ran.err
    assert sorted(os.listdir(full_disk)) in ([".filler"], [".claims", ".filler"])  # no path, no temporary file
    assert not list((full_disk / ".claims").glob("*")) if (full_disk / ".claims").exists() else True
    assert written_outside(tmp_path, before, ("out", "full")) == []


def test_a_full_disk_for_an_image_leaves_no_partial_file(full_disk, tmp_path):
    ran = run_in_process("normal.py", ["a red circle", *IMAGE, "--size", "64", "--out", str(full_disk)], tmp_path)
    assert ran.code == 2 and len(ran.err_lines) == 1 and "no space left" in ran.err_lines[0], ran.err
    assert os.listdir(full_disk) == [".filler"]


def test_a_full_disk_in_write_atomically_raises_disk_full(full_disk):
    with pytest.raises(DiskFull, match="no space left on the device to write .*big.bin"):
        write_atomically(full_disk / "big.bin", lambda handle: handle.write(b"x" * 100_000))
    assert os.listdir(full_disk) == [".filler"]
