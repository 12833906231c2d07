"""Hostile input (issue 16): every case is one line on stderr and exit status 2, checked before anything is
allocated, and nothing is written outside --out and --store. The scripts run in this process (tiny model,
16 px); the cases that need a process of their own (peak memory, Ctrl-C, a killed worker) are in
tests/test_hostile_processes.py.
"""
from __future__ import annotations

import os
import pickle
import re
import struct
import zlib
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from core.errors import quote
from core.models import load_clip
from inprocess import files_under, run_in_process, written_outside

RUN = ["--model", "tiny", "--device", "cpu", "--quiet", "--out", "out", "--store", "store"]
IMAGE = [*RUN, "--size", "16", "--cutn", "1", "--steps-per-stage", "2", "--upscale", "1"]
BAKE = [*RUN, "--size", "16", "--cutn", "1", "--steps-per-stage", "1", "--stages", "2", "--meta-steps", "1",
        "--eval-starts", "1", "--critic", "none", "--no-report"]
LINE_LIMIT = 400  # core.errors.LINE_LIMIT: no message is longer, whatever it quotes


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header says `width` x `height` (its pixels never decoded): a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def path_file(prompt: str, guides: torch.Tensor, embedding: torch.Tensor | None, recipe: dict | None = None,
              model: str = "tiny") -> dict:
    """The dict a path file holds (core.paths.to_file_dict's format), built by hand so it may be hostile."""
    return {"format": "bake-microwave-path", "version": 1, "prompt": prompt, "prompt_embedding": embedding,
            "guides": guides, "model_name": model, "embed_dim": guides.shape[1],
            "recipe": recipe if recipe is not None else {"size": 16, "stages": 2, "steps_per_stage": 2, "cutn": 1},
            "metrics": {}, "created": "2025-01-01T00:00:00+00:00"}


def good_path(clip, prompt: str, seed: int = 0) -> dict:
    embedding = torch.nn.functional.normalize(clip.encode_text([prompt])[0].detach(), dim=-1)
    noise = torch.randn(2, embedding.shape[0], generator=torch.Generator().manual_seed(seed))
    return path_file(prompt, torch.nn.functional.normalize(embedding + 0.05 * noise, dim=-1), embedding)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.fixture(scope="module")
def fix(tmp_path_factory):
    """Hostile files: recipes, images, paths, prompt files."""
    root = tmp_path_factory.mktemp("hostile")
    clip = load_clip("tiny", "cpu")
    chain = ["&a [x, x, x, x, x, x, x, x, x]"] + [
        f"&{name} [{', '.join([f'*{before}'] * 9)}]" for before, name in zip("abcdefgh", "bcdefghi")]
    (root / "alias.yaml").write_text("views: [" + ", ".join(chain) + "]\n")
    (root / "deep.yaml").write_text("views: " + "[" * 20000 + "]" * 20000 + "\n")
    (root / "big.yaml").write_text("# " + "x" * 70_000 + "\nsize: 16\n")
    (root / "latin1.yaml").write_bytes("targets: caf\xe9\n".encode("latin-1"))
    (root / "tag.yaml").write_text("size: !!python/object/apply:os.system ['touch PWNED']\n")
    (root / "lr_nan.yaml").write_text("lr: .nan\n")
    (root / "roundness_inf.yaml").write_text("drawer: {outlines: {roundness: .inf}}\n")
    (root / "long_key.yaml").write_text("? " + "k" * 50_000 + "\n: 1\n")
    (root / "long_number.yaml").write_text("size: " + "9" * 60_000 + "\n")
    (root / "huge.png").write_bytes(png_header(20000, 20000))
    (root / "big.png").write_bytes(png_header(10000, 10000))
    (root / "fake.png").write_bytes(b"not an image")
    torch.save(good_path(clip, "a red circle"), root / "good.pt")
    nan = good_path(clip, "a nan path")
    nan["guides"][0, 0] = float("nan")
    torch.save(nan, root / "nan.pt")
    huge = good_path(clip, "huge size")
    huge["recipe"]["size"] = 1_000_000
    torch.save(huge, root / "huge_size.pt")
    torch.save({"guides": _Evil()}, root / "evil.pt")  # loading it unchecked would run os.system
    with open(root / "evil.pickle.pt", "wb") as handle:
        pickle.dump(_Evil(), handle)
    (root / "garbage.pt").write_bytes(os.urandom(1024))
    (root / "latin1.txt").write_bytes("a red circle\ncaf\xe9 au lait\n".encode("latin-1"))
    (root / "afile").write_text("a file, not a folder\n")
    return root


# (case, script, arguments ({fix}: the fixtures), what the one line on stderr says)
CASES = [
    # 1. resource limits: checked before anything is allocated
    ("upscale 100000", "normal.py", ["a red circle", *IMAGE, "--upscale", "100000"], r"--upscale: must be 1 to 1024"),
    ("size x upscale", "normal.py", ["a red circle", *IMAGE, "--size", "4096", "--upscale", "1000"],
     r"4096000 x 4096000 pixels .* at most 64 megapixels"),
    ("size 1e6", "normal.py", ["a red circle", *IMAGE, "--size", "1000000"], r"--size: must be 8 to 4096"),
    ("size overflow", "normal.py", ["a red circle", *IMAGE, "--size", "9" * 40], r"--size: must be 8 to 4096"),
    ("a path's recipe size", "microwave.py", ["{fix}/huge_size.pt", *RUN], r"'size' expects .* 8 to 4096, got 1000000"),
    ("yaml aliases", "normal.py", ["a red circle", *IMAGE, "--recipe", "{fix}/alias.yaml"], r"anchors and aliases"),
    ("yaml 20000 deep", "normal.py", ["a red circle", *IMAGE, "--recipe", "{fix}/deep.yaml"],
     r"nested more than 32 levels"),
    ("recipe 70 KB", "normal.py", ["a red circle", *IMAGE, "--recipe", "{fix}/big.yaml"], r"larger than 64 KB"),
    ("target 20000 px", "bake.py", ["{fix}/huge.png", *BAKE], r"huge.png has too many pixels"),
    ("target 10000 px", "normal.py", ["{fix}/big.png", *IMAGE], r"big.png is 10000 x 10000 pixels; at most 64"),
    ("init 20000 px", "normal.py", ["a red circle", *IMAGE, "--init", "{fix}/huge.png"], r"too many pixels"),
    ("cutn 1e8", "normal.py", ["a red circle", *IMAGE, "--cutn", "100000000"], r"--cutn: must be 1 to 256"),
    ("stages 1e8", "bake.py", ["a red circle", *BAKE, "--stages", "100000000"], r"--stages: must be 1 to 1000"),
    ("population 1e9", "bake.py", ["a red circle", *BAKE, "--meta", "cma", "--population", "1000000000"],
     r"--population: must be 2 to 4096"),
    ("starts 1e9", "bake.py", ["a red circle", *BAKE, "--starts", "1000000000"], r"--starts: must be 1 to 256"),
    ("unroll 1e9", "bake.py", ["a red circle", *BAKE, "--unroll", "1000000000"], r"--unroll: must be 1 to 1000"),
    ("batch pixels", "batch_bake.py", ["a", "b", "c", "d", *BAKE, "--batch-size", "4096", "--size", "4096",
                                       "--eval-starts", "4"],
     r"a batch of 4 prompt\(s\) would replay 32 images .* at most 256 megapixels"),
    ("population pixels", "bake.py", ["a red circle", *BAKE, "--meta", "cma", "--population", "4096", "--size",
                                      "512"], r"would replay 8192 images of 512 x 512"),
    ("gif frames", "normal.py", ["a red circle", *IMAGE, "--steps", "100000", "--save-every", "1", "--gif",
                                 "--upscale", "16"], r"the GIF would hold 100001 frames"),
    ("steps 1e12", "normal.py", ["a red circle", *IMAGE, "--steps", "1000000000000"], r"--steps: must be 1 to"),
    ("seeds 1e9", "evaluate.py", ["{fix}/latin1.txt", *BAKE, "--seeds", "1000000000"], r"--seeds: must be 1 to"),
    ("quantize 1e12", "normal.py", ["a red circle", *IMAGE, "--quantize", "1000000000000"],
     r"--quantize: must be 0 to 256"),
    ("k 1e12", "auto_microwave.py", ["a red circle", *IMAGE, "--k", "1000000000000"], r"--k: must be 1 to 1000"),
    ("prompt of 3000 characters", "normal.py", ["a " * 1500, *IMAGE], r"longer than 2000 characters"),
    ("prompt of 100 targets", "normal.py", [" | ".join(["x"] * 100), *IMAGE], r"has 100 targets; at most 32"),
    # 2. non-finite values
    ("weight 1e999", "bake.py", ["a red circle:1e999", *BAKE], r"the weight '1e999' of 'a red circle' is not a"),
    ("weight -1e999", "normal.py", ["a red circle | blue:-1e999", *IMAGE], r"the weight '-1e999' of 'blue'"),
    ("weights cancel", "normal.py", ["red:1 | red:-0.9999", *IMAGE], r"cancel out"),
    ("NaN path", "microwave.py", ["{fix}/nan.pt", *IMAGE], r"nan.pt holds NaN or infinity"),
    ("mix nan", "microwave.py", ["a cat", "{fix}/good.pt", *IMAGE, "--mix", "nan"], r"--mix: expected a finite"),
    ("mix inf", "microwave.py", ["a cat", "{fix}/good.pt", *IMAGE, "--mix", "inf"], r"--mix: expected a finite"),
    ("path weight nan", "auto_microwave.py", ["a cat", *IMAGE, "--path-weight", "nan"], r"--path-weight: expected"),
    ("lr nan", "normal.py", ["a red circle", *IMAGE, "--lr", "nan"], r"--lr: expected a finite number"),
    ("tv weight inf", "normal.py", ["a red circle", *IMAGE, "--tv-weight", "inf"], r"--tv-weight: expected a finite"),
    ("recipe lr nan", "normal.py", ["a red circle", *IMAGE, "--recipe", "{fix}/lr_nan.yaml"], r"'lr' expects"),
    ("drawer roundness inf", "normal.py", ["a red circle", *IMAGE, "--recipe", "{fix}/roundness_inf.yaml"],
     r"'roundness' expects a number, 0 to 1000"),
    ("meta-lr nan", "bake.py", ["a red circle", *BAKE, "--meta-lr", "nan"], r"--meta-lr: expected a finite"),
    ("meta-lr -1", "bake.py", ["a red circle", *BAKE, "--meta-lr", "-1"], r"--meta-lr: must be at least 0"),
    ("trust-angle nan", "bake.py", ["a red circle", *BAKE, "--meta", "cma", "--trust-angle", "nan"],
     r"--trust-angle: expected a finite"),
    ("sigma inf", "bake.py", ["a red circle", *BAKE, "--sigma", "inf"], r"--sigma: expected a finite"),
    ("critic weight 2", "bake.py", ["a red circle", *BAKE, "--critic-weight", "2"], r"--critic-weight: must be 0 to 1"),
    ("critic contrast nan", "bake.py", ["a red circle", *BAKE, "--critic-contrast", "nan"],
     r"--critic-contrast: expected a finite"),
    ("claim ttl nan", "batch_bake.py", ["a red circle", *BAKE, "--claim-ttl", "nan"], r"--claim-ttl: expected"),
    # 3. files that must not run code or spoil anything
    ("torch file with code", "microwave.py", ["{fix}/evil.pt", *IMAGE], r"refusing to load, it contains a posix"),
    ("pickle with code", "microwave.py", ["{fix}/evil.pickle.pt", *IMAGE], r"not a readable torch file"),
    ("garbage path", "microwave.py", ["{fix}/garbage.pt", *IMAGE], r"not a readable torch file"),
    ("yaml python tag", "normal.py", ["a red circle", *IMAGE, "--recipe", "{fix}/tag.yaml"], r"not valid YAML"),
    # 5. prompt files
    ("latin-1 prompts", "batch_bake.py", ["{fix}/latin1.txt", *BAKE], r"latin1.txt', line 2: not UTF-8 text"),
    ("latin-1 recipe", "normal.py", ["a red circle", *IMAGE, "--recipe", "{fix}/latin1.yaml"],
     r"latin1.yaml line 1 is not UTF-8"),
    # 6. one line, never a traceback
    ("seed 1e30", "normal.py", ["a red circle", *IMAGE, "--seed", "1" + "0" * 30], r"--seed: must be 0 to 4294967295"),
    ("seed of 5000 digits", "bake.py", ["a red circle", *BAKE, "--seed", "1" * 5000], r"--seed: expected a whole"),
    ("out is a file", "normal.py", ["a red circle", *IMAGE, "--out", "{fix}/afile"], r"--out .*afile' is not a folder"),
    ("out under a file", "normal.py", ["a red circle", *IMAGE, "--out", "{fix}/afile/sub"], r"is not a folder"),
    ("out cannot be made", "normal.py", ["a red circle", *IMAGE, "--out", "/proc/nope/out"], r"cannot write there"),
    ("bake store is a file", "bake.py", ["a red circle", *BAKE, "--store", "{fix}/afile"], r"--store .* not a folder"),
    ("batch store is a file", "batch_bake.py", ["a red circle", *BAKE, "--store", "{fix}/afile"], r"not a folder"),
    ("device overflow", "normal.py", ["a red circle", *IMAGE, "--device", "cuda:" + "9" * 40], r"device"),
    ("unknown option of 100000 characters", "normal.py", ["a red circle", *IMAGE, "--" + "z" * 100_000],
     r"unrecognized arguments: --z+\.\.\."),
    ("choice of 100000 characters", "bake.py", ["a red circle", *BAKE, "--meta", "q" * 100_000], r"invalid choice"),
    ("recipe key of 50000 characters", "normal.py", ["a red circle", *IMAGE, "--recipe", "{fix}/long_key.yaml"],
     r"unknown key 'k+'\.\.\. \(50,000 characters\)"),
    ("number of 60000 digits", "normal.py", ["a red circle", *IMAGE, "--recipe", "{fix}/long_number.yaml"],
     r"long_number.yaml holds a value that cannot be read: Exceeds the limit \(4300 digits\)"),
    ("newline in a prompt", "normal.py", ["a\nb:1e999", *IMAGE], r"the weight '1e999' of 'a\\nb'"),
    ("image name of 5000 characters", "normal.py", ["x" * 5000 + ".png", *IMAGE], r"image file not found: x+\.\.\."),
    ("missing image target", "bake.py", ["red-3fa4b2c1.png", *BAKE], r"image file not found: red-3fa4b2c1.png"),
    ("fake image", "bake.py", ["{fix}/fake.png", *BAKE], r"cannot read image"),
    ("workers", "batch_bake.py", ["a red circle", *BAKE, "--gpus", "cpu:" + "9" * 40], r"cpu:N with N from 1 to"),
    # 7. evaluate
    ("missing prompts file", "evaluate.py", ["/nonexistent.txt", *BAKE, "--methods", "normal"],
     r"prompts file not found: /nonexistent.txt"),
]


@pytest.mark.parametrize("case, script, args, message", CASES, ids=[case[0] for case in CASES])
def test_hostile_input_is_one_line_and_exit_2(case, script, args, message, fix, tmp_path):
    args = [arg.replace("{fix}", str(fix)) for arg in args]
    before = files_under(tmp_path)
    ran = run_in_process(script, args, tmp_path)
    assert ran.code == 2, (ran.code, ran.err[-2000:])
    assert len(ran.err_lines) == 1, ran.err[-2000:]
    line = ran.err_lines[0]
    assert re.search(message, line), line
    assert len(line) <= LINE_LIMIT and "Traceback" not in ran.err
    assert written_outside(tmp_path, before, ("out", "store")) == []
    assert not (tmp_path / "PWNED").exists() and not (fix / "PWNED").exists()
    for store in (tmp_path / "store",):  # a refused bake saved nothing
        assert not list(store.glob("*.pt")) if store.is_dir() else True


def test_quote_cuts_and_escapes():
    assert quote("a\nb") == "'a\\nb'"
    long = quote("x" * 10_000)
    assert len(long) < 120 and long.endswith("(10,000 characters)")
    assert quote(["x" * 200]).endswith("(204 characters)")  # not a text: as repr shows it, cut


def test_the_alias_bomb_is_refused_by_the_loader_itself(fix):
    from core.safe_yaml import load_yaml
    from core.errors import UserError

    with pytest.raises(UserError, match="anchors and aliases"):
        load_yaml(fix / "alias.yaml")
    assert yaml.safe_load("a: 1") == {"a": 1}  # PyYAML itself is untouched


def test_a_diverging_image_is_not_saved(tmp_path):
    ran = run_in_process("normal.py", ["a red circle", *IMAGE, "--lr", "1e30"], tmp_path)
    assert ran.code == 2 and len(ran.err_lines) == 1 and "diverged" in ran.err_lines[0], ran.err
    assert not list((tmp_path / "out").glob("*.png"))


def test_help_shows_the_limits(tmp_path):
    ran = run_in_process("normal.py", ["--help"], tmp_path)
    assert ran.code == 0
    assert "(8 to 4096)" in ran.out and "(1 to 1024)" in ran.out and "(1 to 256)" in ran.out


def test_a_big_wide_image_within_the_pixel_limit_is_read(tmp_path):
    Image.new("RGB", (20000, 10), (255, 0, 0)).save(tmp_path / "wide.png")
    ran = run_in_process("normal.py", ["a red circle", *IMAGE, "--init", str(tmp_path / "wide.png")], tmp_path)
    assert ran.code == 0, ran.err
