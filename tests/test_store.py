"""Tests for the path store: the file format and legacy files (core.paths), atomic saves and lookups
(core.store). Slugs: test_slugs.py; the embedding cache and nearest search: test_nearest.py."""

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import LEGACY
from core import store
from core.errors import UserError
from core.paths import FORMAT_VERSION, BakedPath, check_compatible, load_path, to_file_dict
from core.store import find_path, list_paths, save_path
from path_helpers import files_in, make_path, sha8, write_legacy


# ----------------------------------------------------------------------------- our format


def test_round_trip(tmp_path):
    original = make_path()
    file = save_path(tmp_path / "baked", original)
    assert file == tmp_path / "baked" / "a_red_square.pt"
    loaded = load_path(file)
    assert loaded.prompt == original.prompt
    assert torch.equal(loaded.guides, original.guides)
    assert torch.equal(loaded.prompt_embedding, original.prompt_embedding)
    assert (loaded.model_name, loaded.embed_dim, loaded.stages) == ("fake", 4, 3)
    assert loaded.recipe == original.recipe
    assert loaded.metrics == {"loss": 0.25}
    assert loaded.created == "2025-01-02T03:04:05+00:00"
    assert loaded.legacy is False and loaded.file == file
    assert files_in(tmp_path / "baked") == ["a_red_square.pt"]


def test_file_is_a_plain_dict_readable_with_weights_only(tmp_path):
    big = torch.randn(100, 4, dtype=torch.float64, requires_grad=True)
    path = make_path()
    path.guides = big[10:13] * 1  # a non-leaf view of a larger float64 tensor
    file = save_path(tmp_path, path)
    raw = torch.load(file, weights_only=True, map_location="cpu")
    assert set(raw) == {
        "format", "version", "prompt", "prompt_embedding", "guides", "model_name",
        "embed_dim", "recipe", "metrics", "created",
    }
    assert raw["format"] == "bake-microwave-path" and raw["version"] == FORMAT_VERSION == 1
    guides = raw["guides"]
    assert guides.dtype == torch.float32 and guides.device.type == "cpu"
    assert guides.is_contiguous() and not guides.requires_grad
    assert guides.untyped_storage().nbytes() == 3 * 4 * 4  # not the whole 100-row storage


def test_created_defaults_to_utc_iso():
    path = BakedPath("p", torch.zeros(1, 2), None, None, 2)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", path.created)


def test_saving_twice_needs_overwrite(tmp_path):
    save_path(tmp_path, make_path(seed=0))
    with pytest.raises(UserError, match=r"already baked: 'a red square'.*--overwrite"):
        save_path(tmp_path, make_path(seed=1))
    save_path(tmp_path, make_path(seed=1), overwrite=True)
    assert torch.equal(load_path(tmp_path / "a_red_square.pt").guides, make_path(seed=1).guides)


def test_a_path_saved_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    """Two runs bake one prompt: both find it missing, the first saves; the second must not replace it."""
    save_path(tmp_path, make_path(seed=0))
    # Both checks ran before the first run saved:
    monkeypatch.setattr(store, "find_path", lambda store_dir, prompt: None)
    monkeypatch.setattr(store.os.path, "lexists", lambda file: False)
    with pytest.raises(UserError, match=r"already baked: 'a red square'.*saved meanwhile"):
        save_path(tmp_path, make_path(seed=1))
    monkeypatch.undo()
    assert torch.equal(load_path(tmp_path / "a_red_square.pt").guides, make_path(seed=0).guides)
    assert [file.name for file in tmp_path.iterdir()] == ["a_red_square.pt"]  # no temporary file left


def test_slug_file_with_other_prompt_is_never_overwritten(tmp_path):
    other = make_path(prompt="something else")
    torch.save(to_file_dict(other), tmp_path / "a_red_square.pt")
    with pytest.raises(UserError, match="different prompt"):
        save_path(tmp_path, make_path(), overwrite=True)
    assert load_path(tmp_path / "a_red_square.pt").prompt == "something else"


def test_unreadable_file_at_slug_needs_overwrite(tmp_path):
    (tmp_path / "a_red_square.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot be read.*--overwrite"):
        save_path(tmp_path, make_path())
    save_path(tmp_path, make_path(), overwrite=True)
    assert load_path(tmp_path / "a_red_square.pt").prompt == "a red square"


def test_unstorable_recipe_writes_nothing(tmp_path):
    path = make_path()
    path.recipe = {"out": Path("x")}
    with pytest.raises(TypeError, match="recipe"):
        save_path(tmp_path, path)
    assert files_in(tmp_path) == []


def test_crash_at_rename_leaves_no_file(tmp_path, monkeypatch):
    def broken_rename(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_rename)  # how a file replaces another
    monkeypatch.setattr(os, "link", broken_rename)  # how a new file gets its name
    with pytest.raises(OSError, match="disk gone"):
        save_path(tmp_path / "baked", make_path())
    assert files_in(tmp_path / "baked") == []


def test_crash_while_writing_leaves_no_half_file(tmp_path, monkeypatch):
    def half_save(obj, handle):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        save_path(tmp_path, make_path())
    assert files_in(tmp_path) == []


def test_crash_during_overwrite_keeps_old_file(tmp_path, monkeypatch):
    file = save_path(tmp_path, make_path(seed=0))
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        save_path(tmp_path, make_path(seed=1), overwrite=True)
    assert files_in(tmp_path) == ["a_red_square.pt"]
    assert torch.equal(load_path(file).guides, make_path(seed=0).guides)


# ----------------------------------------------------------------------------- bad files


def assert_one_line_naming(error: UserError, file: Path) -> None:
    message = str(error)
    assert "\n" not in message
    assert str(file) in message


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as info:
        load_path(tmp_path / "nope.pt")
    assert_one_line_naming(info.value, tmp_path / "nope.pt")


@pytest.mark.parametrize(
    "content", [b"", b"hello, not a torch file\n", bytes(range(256)) * 8], ids=["empty", "text", "binary"]
)
def test_corrupt_file(tmp_path, content):
    file = tmp_path / "bad.pt"
    file.write_bytes(content)
    with pytest.raises(UserError, match="not a readable torch file") as info:
        load_path(file)
    assert_one_line_naming(info.value, file)


def test_truncated_file(tmp_path):
    file = save_path(tmp_path, make_path())
    file.write_bytes(file.read_bytes()[:200])
    with pytest.raises(UserError) as info:
        load_path(file)
    assert_one_line_naming(info.value, file)


def test_pickled_code_is_refused(tmp_path):
    file = tmp_path / "evil.pt"
    torch.save({"format": "bake-microwave-path", "payload": Path("x")}, file)
    with pytest.raises(UserError, match="refusing") as info:
        load_path(file)
    assert_one_line_naming(info.value, file)


def test_newer_version(tmp_path):
    data = to_file_dict(make_path())
    data["version"] = FORMAT_VERSION + 1
    file = tmp_path / "new.pt"
    torch.save(data, file)
    with pytest.raises(UserError, match="newer version") as info:
        load_path(file)
    assert_one_line_naming(info.value, file)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "something"}, "not a baked path file"),
        ({"guides": torch.zeros(3)}, "guides"),
        ({"guides": torch.zeros(3, 5)}, "embed_dim"),
        ({"prompt_embedding": torch.zeros(5)}, "prompt_embedding"),
        ({"prompt": ""}, "no prompt"),
        ({"recipe": [1]}, "recipe"),
        ({"created": None}, "created"),
    ],
)
def test_malformed_dict(tmp_path, change, message):
    data = to_file_dict(make_path())
    data.update(change)
    file = tmp_path / "x.pt"
    torch.save(data, file)
    with pytest.raises(UserError, match=message) as info:
        load_path(file)
    assert_one_line_naming(info.value, file)


def test_missing_keys(tmp_path):
    data = to_file_dict(make_path())
    del data["guides"], data["metrics"]
    file = tmp_path / "x.pt"
    torch.save(data, file)
    with pytest.raises(UserError, match="missing guides, metrics"):
        load_path(file)


@pytest.mark.parametrize("value", [torch.zeros(5), torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), [1, 2]])
def test_wrong_legacy_payload(tmp_path, value):
    file = tmp_path / "x.pt"
    torch.save(value, file)
    with pytest.raises(UserError) as info:
        load_path(file)
    assert_one_line_naming(info.value, file)


# ----------------------------------------------------------------------------- legacy files


def test_all_legacy_files_load():
    files = sorted(LEGACY.glob("*.pt"))
    assert len(files) == 34
    for file in files:
        path = load_path(file, device="cpu")
        assert path.guides.shape == (10, 512), file
        assert path.guides.device.type == "cpu" and path.guides.dtype == torch.float32
        assert not path.guides.requires_grad
        assert path.legacy and path.file == file and path.stages == 10
        assert (path.model_name, path.embed_dim, path.prompt_embedding) == ("ViT-B/32", 512, None)
        assert path.prompt == file.name[: -len(".pt")].replace("_", " ")


def test_legacy_prompts_from_names():
    def prompt_of(name):
        return load_path(LEGACY / name).prompt

    assert prompt_of("a_lemon.pt") == "a lemon"
    assert prompt_of("iridescent_vaporwave_bubbles_#digitalart.pt") == "iridescent vaporwave bubbles #digitalart"
    assert prompt_of("a_road_sign_with_the_word_'Hello'_on_it.pt") == "a road sign with the word 'Hello' on it"
    assert prompt_of("more_than_everything,_and_less_than_nothing..pt") == (
        "more than everything, and less than nothing."
    )


def test_list_paths_over_legacy_copy(tmp_path):
    for file in LEGACY.glob("*.pt"):
        shutil.copyfile(file, tmp_path / file.name)
    paths = list_paths(tmp_path)
    assert len(paths) == 34
    prompts = [p.prompt for p in paths]
    assert prompts == sorted(prompts)
    assert prompts[0] == "a body of water" and prompts[-1] == "the sound of the wind"


def test_legacy_file_is_found_and_upgraded_in_place(tmp_path):
    name = "a_road_sign_with_the_word_'Hello'_on_it.pt"
    shutil.copyfile(LEGACY / name, tmp_path / name)
    prompt = "a road sign with the word 'Hello' on it"
    assert find_path(tmp_path, prompt) == tmp_path / name
    with pytest.raises(UserError, match="already baked"):
        save_path(tmp_path, make_path(prompt=prompt, dim=512))
    file = save_path(tmp_path, make_path(prompt=prompt, dim=512), overwrite=True)
    assert file == tmp_path / name  # one file per prompt, not a second one under the slug
    upgraded = load_path(file)
    assert not upgraded.legacy and upgraded.prompt == prompt and upgraded.model_name == "fake"


# ----------------------------------------------------------------------------- store listing


def test_list_paths_skips_temp_and_reports_corrupt(tmp_path, capsys):
    save_path(tmp_path, make_path(prompt="b second"))
    save_path(tmp_path, make_path(prompt="a first"))
    write_legacy(tmp_path, "c third")
    (tmp_path / ".a_first.pt.abc123.tmp").write_bytes(b"partial")
    (tmp_path / ".hidden.pt").write_bytes(b"partial")
    (tmp_path / "broken.pt").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("not a path")
    prompts = [p.prompt for p in list_paths(tmp_path)]
    assert prompts == ["a first", "b second", "c third"]
    err = capsys.readouterr().err
    assert "warning: skipping" in err and "broken.pt" in err
    assert err.count("\n") == 1


def test_list_paths_of_missing_store_is_empty(tmp_path):
    assert list_paths(tmp_path / "nothing") == []


def test_find_path(tmp_path):
    file = save_path(tmp_path, make_path(prompt="a/b"))
    assert file.name == f"a_b-{sha8('a/b')}.pt"
    assert find_path(tmp_path, "a/b") == file
    assert find_path(tmp_path, "a b") is None
    assert find_path(tmp_path, "a_b") is None
    assert find_path(tmp_path / "missing", "a/b") is None


# ----------------------------------------------------------------------------- compatibility


def test_dim_mismatch_names_both(tmp_path):
    path = make_path(dim=512, model="ViT-B/32")
    with pytest.raises(UserError) as info:
        check_compatible(path, 64, "tiny")
    message = str(info.value)
    assert "512" in message and "64" in message and "ViT-B/32" in message and "tiny" in message


def test_same_dim_other_model_warns(capsys):
    check_compatible(make_path(dim=4, model="a"), 4, "b")
    assert "baked with a" in capsys.readouterr().err
    check_compatible(make_path(dim=4, model="a"), 4, "a")
    assert capsys.readouterr().err == ""
