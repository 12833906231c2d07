"""store.py, the path store's own tool: list, show, rm, gallery and import, run in this process through the same
parser and one-line error handling as the script (`core.store_cli`, `core.store_jobs`, `core.cli.run`), on a
store of copies of the original tool's paths and a few made-up ones (tiny model)."""
from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import LEGACY, run_script
from core import cli, store_cli, store_jobs
from core.gallery import GALLERY_DIR
from core.image_jobs import microwave_job
from core.jobs import ImageOptions, MicrowaveJob, RunOptions
from core.nearest import prompt_embeddings
from core.paths import BakedPath, load_path
from core.recipes import RecipeChoice, load_recipe
from core.report import verdict_of, write_bake_report
from core.store import find_path, save_path

LEGACY_NAMES = ["a_lemon.pt", "a_lonely_cloud.pt", "the_doziest_dog.pt", "more_than_everything,_and_less_than_nothing..pt"]
PAID_OFF, NOT_PAID_OFF = "a red circle", "a blue square"
FAST = ["--model", "tiny", "--device", "cpu", "--quiet", "--size", "16", "--steps-per-stage", "1", "--cutn", "1"]


def made_up(prompt: str, baked: float, normal: float, created: str, seed: int, dim: int = 512,
            model: str = "tiny") -> BakedPath:
    """A path as a bake saves it, with chosen losses (the guides are random: what they draw does not matter)."""
    generator = torch.Generator().manual_seed(seed)
    recipe = {**load_recipe("quick"), "size": 16, "stages": 2}
    return BakedPath(prompt=prompt, guides=torch.randn(2, dim, generator=generator),
                     prompt_embedding=torch.randn(dim, generator=generator), model_name=model, embed_dim=dim,
                     recipe=recipe, created=created,
                     metrics={"baked_loss": baked, "normal_loss": normal, "seconds": 12.5,
                              "curve": [{"meta_step": 0, "meta_loss": 0.9}, {"meta_step": 1, "meta_loss": 0.8}],
                              "meta": {"meta": "unrolled", "meta_lr": 0.001}})


@pytest.fixture
def store(tmp_path) -> Path:
    """4 legacy files and 2 made-up bakes: one that paid off (-16.7 %), one that did not (+16.7 %)."""
    store = tmp_path / "baked"
    store.mkdir()
    for name in LEGACY_NAMES:
        shutil.copy(LEGACY / name, store / name)
    save_path(store, made_up(PAID_OFF, 0.5, 0.6, "2025-03-01T10:00:00+00:00", 1))
    save_path(store, made_up(NOT_PAID_OFF, 0.7, 0.6, "2025-01-01T10:00:00+00:00", 2))
    return store


def tool(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `store.py ARGV` in this process, as the script does; (exit status, stdout, stderr)."""
    args = store_cli.make_parser("store.py").parse_args(list(argv))
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: store_jobs.run(store_cli.store_job(args)))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def table_rows(out: str) -> list[str]:
    """The table's rows (no header, no summary line)."""
    return out.splitlines()[1:-1]


# --------------------------------------------------------------------------- list


def test_list_is_a_line_per_path_with_the_change_and_a_summary(store, capsys):
    status, out, err = tool(capsys, "list", "--store", str(store))
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["prompt", "model", "stages", "size", "change", "verdict", "created", "(UTC)"]
    rows = table_rows(out)
    assert len(rows) == 6
    assert [row.split("  ")[0] for row in rows] == [NOT_PAID_OFF, "a lemon", "a lonely cloud", PAID_OFF,
                                                    "more than everything, and less than nothing.", "the doziest dog"]
    paid = next(row for row in rows if row.startswith(PAID_OFF))
    assert re.search(r"tiny\s+2\s+16\s+-16\.7%\s+baking paid off\s+2025-03-01 10:00$", paid), paid
    assert re.search(r"\+16\.7%\s+baking did not pay off", rows[0])
    lemon = next(row for row in rows if row.startswith("a lemon "))
    assert lemon.split()[2:4] == ["legacy", "10"] and "%" not in lemon  # size and change blank
    assert lines[-1] == f"6 paths in {store}: 2 compared, 1 paid off, 1 did not; 4 legacy (store.py import converts them)"


def test_list_sorts_by_change_date_and_model(store, capsys):
    by_change = table_rows(tool(capsys, "list", "--store", str(store), "--sort", "change")[1])
    assert by_change[0].startswith(PAID_OFF) and by_change[1].startswith(NOT_PAID_OFF)
    reverse = table_rows(tool(capsys, "list", "--store", str(store), "--sort", "change", "--reverse")[1])
    assert reverse[0].startswith(NOT_PAID_OFF) and reverse[1].startswith(PAID_OFF)
    assert " legacy " in reverse[-1]  # paths without a change stay last either way
    by_date = table_rows(tool(capsys, "list", "--store", str(store), "--sort", "date")[1])
    assert by_date[0].startswith(NOT_PAID_OFF) and by_date[1].startswith(PAID_OFF)  # January, March, then the copies
    by_model = table_rows(tool(capsys, "list", "--store", str(store), "--sort", "model")[1])
    assert [" legacy " in row for row in by_model] == [True] * 4 + [False] * 2
    only = table_rows(tool(capsys, "list", "--store", str(store), "--model", "tiny")[1])
    assert len(only) == 2 and all(" tiny " in row for row in only)
    assert len(table_rows(tool(capsys, "list", "--store", str(store), "--model", "legacy")[1])) == 4


def test_list_json_is_a_list_of_objects(store, capsys):
    status, out, _ = tool(capsys, "list", "--store", str(store), "--json", "--sort", "change")
    rows = json.loads(out)  # nothing but the JSON on stdout
    assert status == 0 and len(rows) == 6
    first = rows[0]
    assert first["prompt"] == PAID_OFF and first["model"] == "tiny" and first["size"] == 16 and first["stages"] == 2
    assert first["change"] == pytest.approx(-100 / 6) and first["verdict"] == verdict_of(0.5, 0.6)[0]
    assert rows[1]["verdict"] == "baking did not pay off"
    legacy = [row for row in rows if row["legacy"]]
    assert len(legacy) == 4 and all(row["change"] is None and row["size"] is None for row in legacy)
    assert {row["prompt"] for row in legacy} >= {"more than everything, and less than nothing."}


def test_list_skips_an_unreadable_file_with_one_warning(store, capsys):
    (store / "broken.pt").write_bytes(b"not a torch file")
    status, out, err = tool(capsys, "list", "--store", str(store))
    assert status == 0 and len(table_rows(out)) == 6
    assert len(err.splitlines()) == 1 and "broken.pt" in err and err.startswith("warning:")


def test_list_keeps_a_hostile_prompt_on_one_line(tmp_path, capsys):
    store = tmp_path / "store"
    save_path(store, made_up("two\nlines \x1b[31mred", 0.5, 0.6, "2025-01-01T00:00:00+00:00", 3))
    status, out, _ = tool(capsys, "list", "--store", str(store))
    assert status == 0 and len(out.splitlines()) == 3 and "\x1b" not in out
    assert "two\\nlines \\x1b[31mred" in out


def test_list_of_a_missing_store_is_a_one_line_error(tmp_path, capsys):
    status, out, err = tool(capsys, "list", "--store", str(tmp_path / "nope"))
    assert status == 2 and out == "" and err == f"error: no store at {tmp_path / 'nope'} (--store names another folder)\n"


# --------------------------------------------------------------------------- show


def report_for(out: Path, prompt: str) -> Path:
    image = torch.rand(3, 8, 8)
    return write_bake_report(out / "reports", prompt, [image], [{"meta_step": 0, "meta_loss": 0.5}], 0.5, 0.6,
                             None, image, {"seed": 0})


def test_show_by_prompt_and_by_file_names_the_report(store, tmp_path, capsys):
    out_dir = tmp_path / "outputs"
    status, text, _ = tool(capsys, "show", PAID_OFF, "--store", str(store), "--out", str(out_dir))
    assert status == 0 and f"report:   no report found under {out_dir / 'reports'}" in text
    first = report_for(out_dir, PAID_OFF)
    # "a red circle-1" is reported in a_red_circle-1/, the name a second report of "a red circle" would get
    decoy = report_for(out_dir, "a red circle-1")
    assert (first.parent.name, decoy.parent.name) == ("a_red_circle", "a_red_circle-1")
    status, by_prompt, _ = tool(capsys, "show", PAID_OFF, "--store", str(store), "--out", str(out_dir))
    lines = by_prompt.splitlines()
    assert lines[0] == f"prompt:   {PAID_OFF}" and f"report:   {first}" in lines
    assert "model:    tiny (embed dim 512)" in lines and "stages:   2 x 15 steps, 16 px" in lines
    assert "change:   -16.7%, baking paid off (held-out loss: baked 0.5000 vs normal 0.6000)" in lines
    assert "curve:    2 meta-steps, meta-loss 0.9000 -> 0.8000" in lines and "seconds:  12.5" in lines
    assert "    meta_lr: 0.001" in lines and "recipe:" in lines and "  size: 16" in lines
    again = report_for(out_dir, PAID_OFF)  # baked again: the newest report is its report
    by_file = tool(capsys, "show", str(find_path(store, PAID_OFF)), "--store", str(store), "--out", str(out_dir))[1]
    assert by_file == by_prompt.replace(str(first), str(again)) and again.parent.name == "a_red_circle-2"


def test_show_a_legacy_path_and_an_unknown_prompt(store, capsys):
    status, text, _ = tool(capsys, "show", "a lemon", "--store", str(store))
    assert status == 0 and "a legacy file of the original tool" in text and "metrics:  none recorded" in text
    status, text, err = tool(capsys, "show", "a lemon tree", "--store", str(store))
    assert status == 2 and text == "" and err.count("\n") == 1 and "no path for 'a lemon tree'" in err


# --------------------------------------------------------------------------- rm


def test_rm_refuses_without_yes_and_removes_nothing(store, capsys):
    before = sorted(store.iterdir())
    status, out, err = tool(capsys, "rm", PAID_OFF, "a lemon", "--store", str(store))
    assert status == 2 and err == "error: not removing 2 path(s) without --yes\n"
    assert out.splitlines() == [f"would remove {store / 'a_red_circle.pt'} ('{PAID_OFF}')",
                                f"would remove {store / 'a_lemon.pt'} ('a lemon')"]
    assert sorted(store.iterdir()) == before


def test_rm_with_yes_removes_the_file_and_nearest_forgets_it(store, capsys):
    encode = lambda texts: torch.randn(len(texts), 512)  # noqa: E731 - only the bookkeeping is tested
    prompt_embeddings(store, "tiny", encode)  # the nearest-path cache now holds the legacy paths (no embedding)
    cache_file = store / ".cache" / "embeddings-tiny.pt"
    assert "a_lemon.pt" in torch.load(cache_file, weights_only=True)["entries"]
    status, out, _ = tool(capsys, "rm", PAID_OFF, str(store / "a_lemon.pt"), "a lemon", "--store", str(store), "--yes")
    assert status == 0 and out.splitlines()[-1] == f"removed 2 path(s) from {store}"  # the lemon named twice
    assert find_path(store, PAID_OFF) is None and not (store / "a_lemon.pt").exists()
    paths, _ = prompt_embeddings(store, "tiny", encode)
    assert len(paths) == 4 and PAID_OFF not in {path.prompt for path in paths}
    cache = torch.load(cache_file, weights_only=True)
    assert set(cache["entries"]) == {path.file.name for path in paths if path.legacy} and len(cache["entries"]) == 3


def test_rm_removes_an_unreadable_file_of_the_store(store, capsys):
    (store / "broken.pt").write_bytes(b"not a torch file")
    status, out, _ = tool(capsys, "rm", str(store / "broken.pt"), "--store", str(store), "--yes")
    assert status == 0 and f"removing {store / 'broken.pt'} (unreadable)" in out and not (store / "broken.pt").exists()


def test_rm_never_touches_anything_outside_the_store(store, tmp_path, capsys, monkeypatch):
    outside = tmp_path / "x.pt"
    shutil.copy(LEGACY / "a_lemon.pt", outside)
    (store / "link.pt").symlink_to(outside)
    monkeypatch.chdir(store)
    for item, message in [("../x.pt", "is not in the store"), (str(outside), "is not in the store"),
                          ("link.pt", "is a symbolic link"), ("no such prompt", "no path for 'no such prompt'")]:
        # a good prompt beside the bad item: nothing at all is removed
        status, out, err = tool(capsys, "rm", PAID_OFF, item, "--store", ".", "--yes")
        assert status == 2 and message in err and err.count("\n") == 1, (item, err)
        assert out == "" and find_path(".", PAID_OFF) is not None
    assert outside.is_file() and (store / "link.pt").is_symlink()
    # the link's prompt ('link') is not found either, and its target is never followed
    assert tool(capsys, "rm", "link", "--store", ".", "--yes")[0] == 2 and outside.is_file()


# --------------------------------------------------------------------------- gallery


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])


def page_links(page: Path) -> Links:
    """The page's image sources and links, each checked to be relative and to resolve to a file."""
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    for link in links.images + links.links:
        assert not link.startswith("/") and ":" not in link, link
        assert (page.parent / unquote(link)).is_file(), link
    return links


def test_gallery_replays_once_and_links_every_path(store, tmp_path, capsys):
    out_dir = tmp_path / "outputs"
    report = report_for(out_dir, PAID_OFF)
    status, out, _ = tool(capsys, "gallery", "--store", str(store), "--out", str(out_dir), *FAST)
    page = out_dir / "gallery" / "index.html"
    assert status == 0 and out == f"gallery: {page} (6 paths: 6 images replayed now, 0 from the cache, 0 without an image)\n"
    cached = {image: image.stat().st_mtime_ns for image in (store / GALLERY_DIR).iterdir()}
    assert len(cached) == 6
    links = page_links(page)
    assert len(links.images) == 6 and all(src.startswith("images/") for src in links.images)
    assert links.links == [f"../reports/{report.parent.name}/index.html"]  # the one path with a report
    text = page.read_text(encoding="utf-8")
    for prompt in [PAID_OFF, NOT_PAID_OFF, "a lemon", "more than everything, and less than nothing."]:
        assert f"<strong>{prompt}</strong>" in text
    assert "-16.7% · baking paid off" in text and "+16.7% · baking did not pay off" in text

    # A second gallery replays nothing and keeps the first page.
    status, out, _ = tool(capsys, "gallery", "--store", str(store), "--out", str(out_dir), *FAST)
    assert "(6 paths: 0 images replayed now, 6 from the cache, 0 without an image)" in out
    assert out.split()[1] == str(out_dir / "gallery" / "index-1.html") and page.is_file()
    assert {image: image.stat().st_mtime_ns for image in (store / GALLERY_DIR).iterdir()} == cached  # untouched

    # A path baked again gets a new image; another seed gives new images of them all.
    save_path(store, made_up(PAID_OFF, 0.4, 0.6, "2025-04-01T10:00:00+00:00", 9), overwrite=True)
    out = tool(capsys, "gallery", "--store", str(store), "--out", str(out_dir), *FAST)[1]
    assert "1 images replayed now, 5 from the cache" in out
    out = tool(capsys, "gallery", "--store", str(store), "--out", str(out_dir), *FAST, "--seed", "3")[1]
    assert "6 images replayed now, 0 from the cache" in out


def test_gallery_image_is_what_microwave_makes(store, tmp_path, capsys):
    tool(capsys, "gallery", "--store", str(store), "--out", str(tmp_path / "outputs"), *FAST, "--seed", "5")
    for file in [find_path(store, NOT_PAID_OFF), store / "a_lonely_cloud.pt"]:
        recipe = RecipeChoice(None, {"size": 16, "steps_per_stage": 1, "cutn": 1})
        microwave_job(MicrowaveJob(str(file), run=RunOptions(model="tiny", device="cpu", seed=5, quiet=True,
                                                            out=str(tmp_path / "mw")),
                                   recipe=recipe, image=ImageOptions(upscale=1)))
        made = next((tmp_path / "mw").glob(f"microwave-{file.stem}*.png"))
        shown = next((store / GALLERY_DIR).glob(f"{file.stem}-*.png"))
        difference = np.abs(np.asarray(Image.open(made), dtype=int) - np.asarray(Image.open(shown), dtype=int))
        # the same image, up to a level of rounding where batching moves a float
        assert difference.max() <= 2 and difference.mean() < 0.05, file.name


def test_gallery_notes_the_paths_it_cannot_replay(tmp_path, capsys):
    store, out_dir = tmp_path / "baked", tmp_path / "outputs"
    save_path(store, made_up(PAID_OFF, 0.5, 0.6, "2025-01-01T00:00:00+00:00", 1))
    save_path(store, made_up("a wide path", 0.5, 0.6, "2025-01-01T00:00:00+00:00", 4, dim=256, model="wide"))
    save_path(store, made_up("an unknown model's", 0.5, 0.6, "2025-01-01T00:00:00+00:00", 5, model="no-such-model"))
    status, out, err = tool(capsys, "gallery", "--store", str(store), "--out", str(out_dir), *FAST)
    assert status == 0 and "(3 paths: 1 images replayed now, 0 from the cache, 2 without an image)" in out
    text = (out_dir / "gallery" / "index.html").read_text(encoding="utf-8")
    assert "baked with wide (256-dim): run the gallery with --model own or --model wide to see it" in text
    assert len(page_links(out_dir / "gallery" / "index.html").images) == 1
    # Each path on its own model: tiny's image is cached already, each model that cannot load is named once.
    status, out, err = tool(capsys, "gallery", "--store", str(store), "--out", str(out_dir), *FAST[2:],
                            "--model", "own")
    assert status == 0 and "(3 paths: 0 images replayed now, 1 from the cache, 2 without an image)" in out
    assert err.count("warning: no images of the paths baked with ") == 2 and "no-such-model" in err
    text = (out_dir / "gallery" / "index-1.html").read_text(encoding="utf-8")
    assert "no image: unknown model &#x27;no-such-model&#x27;" in text


def test_rm_forgets_the_gallery_images_of_the_path(store, tmp_path, capsys):
    tool(capsys, "gallery", "--store", str(store), "--out", str(tmp_path / "outputs"), *FAST)
    assert len(list((store / GALLERY_DIR).glob("a_red_circle-*.png"))) == 1
    tool(capsys, "rm", PAID_OFF, "--store", str(store), "--yes")
    assert list((store / GALLERY_DIR).glob("a_red_circle-*.png")) == []
    assert len(list((store / GALLERY_DIR).iterdir())) == 5


# --------------------------------------------------------------------------- import


def test_import_converts_the_original_paths_and_never_overwrites(tmp_path, capsys):
    source = tmp_path / "old"
    shutil.copytree(LEGACY, source)
    (source / "notes.txt").write_text("not a path")
    (source / "broken.pt").write_bytes(b"\x00" * 10)
    store = tmp_path / "baked"
    status, out, err = tool(capsys, "import", str(source), "--store", str(store))
    assert status == 0
    assert out.splitlines()[-1] == (f"imported 34 path(s) into {store}; 0 already there (--overwrite replaces "
                                    "them), 2 file(s) not a legacy path")
    assert err.count("\n") == 2 and "broken.pt" in err and "notes.txt: not a .pt file" in err
    original = load_recipe("original")
    for file in sorted(LEGACY.glob("*.pt")):
        legacy = load_path(file)
        path = load_path(find_path(store, legacy.prompt))
        assert not path.legacy and path.model_name == "ViT-B/32" and path.prompt_embedding is None
        assert torch.equal(path.guides, legacy.guides) and not path.guides.requires_grad
        assert path.recipe["size"] == original["size"] and path.recipe["quantize"] == 16
        assert path.metrics["imported_from"] == file.name and path.created == legacy.created
    files = {file: file.read_bytes() for file in store.glob("*.pt")}
    assert len(files) == 34

    status, out, _ = tool(capsys, "import", str(source), "--store", str(store))  # again: nothing replaced
    assert status == 0 and "imported 0 path(s)" in out and "34 already there" in out
    assert {file: file.read_bytes() for file in store.glob("*.pt")} == files
    status, out, _ = tool(capsys, "import", str(source), "--store", str(store), "--overwrite")
    assert "imported 34 path(s)" in out


def test_import_upgrades_a_store_of_legacy_files_in_place(store, capsys):
    status, out, _ = tool(capsys, "import", str(store), "--store", str(store), "--overwrite")
    assert status == 0 and "imported 4 path(s)" in out  # the made-up ones are current already (a warning each)
    assert len(list(store.glob("*.pt"))) == 6 and not any(load_path(file).legacy for file in store.glob("*.pt"))
    status, out, err = tool(capsys, "import", str(store / "missing"), "--store", str(store))
    assert status == 2 and err == f"error: no folder at {store / 'missing'} to import from\n"


# --------------------------------------------------------------------------- the script


@pytest.mark.slow
def test_the_script_lists_and_refuses_in_one_line(store, tmp_path):
    listed = run_script("store.py", "list", "--store", str(store), cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.splitlines()[-1].startswith("6 paths in")
    refused = run_script("store.py", "rm", PAID_OFF, "--store", str(store), cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr == "error: not removing 1 path(s) without --yes\n"
    assert find_path(store, PAID_OFF) is not None
    bad = run_script("store.py", "show", "--store", str(store), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
