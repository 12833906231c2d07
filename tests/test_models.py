"""Model loading: tiny, shipped scenes models, local weight files, auto, devices, errors."""
from __future__ import annotations

import pytest
import torch

from conftest import run_script
from core import critics, models
from core.errors import UserError
from core.models import build_tiny_clip, load_clip, resolve_device
from core.scenes_clip import SHIPPED


def test_tiny_is_seeded_512_and_frozen(tiny_clip):
    again = build_tiny_clip()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                  build_tiny_clip().state_dict().values()))
    assert tiny_clip.embed_dim == 512 and tiny_clip.image_size == 32
    assert not tiny_clip.model.training
    assert not any(parameter.requires_grad for parameter in tiny_clip.model.parameters())


def test_tiny_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_clip()
    assert torch.equal(torch.rand(3), expected)


def test_text_is_encoded_once_without_grad_and_images_with_grad(tiny_clip):
    text = tiny_clip.encode_text(["a red circle", "a blue square"])
    assert text.shape == (2, 512) and not text.requires_grad
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    pixels = torch.rand(2, 3, 48, 48, requires_grad=True)  # any size: resized to the model's input
    tiny_clip.encode_images(pixels).sum().backward()
    assert pixels.grad.abs().sum() > 0


def test_local_openai_format_weights_file(tmp_path, tiny_clip):
    """A state-dict file in OpenAI's format loads offline (the clip package infers the architecture)."""
    file = tmp_path / "my-clip.pt"
    torch.save(build_tiny_clip().state_dict(), file)
    loaded = load_clip(str(file), "cpu")
    assert loaded.name == "my-clip.pt" and loaded.embed_dim == 512
    # the clip package stores the weights in fp16 on load: same model up to that rounding
    similarity = (loaded.encode_text(["a cat"]) * tiny_clip.encode_text(["a cat"])).sum()
    assert similarity > 0.999


def test_shipped_scenes_model_loads_by_name_and_file(scenes_clip):
    from core.scenes_clip import SHIPPED

    assert scenes_clip.embed_dim == 512
    by_file = load_clip(str(SHIPPED["scenes"]), "cpu")
    assert torch.allclose(by_file.encode_text(["a red circle"]), scenes_clip.encode_text(["a red circle"]))


def test_auto_falls_back_to_the_scenes_mix_offline(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # no cached ViT-B/32
    monkeypatch.setattr(models, "_download_reachable", lambda name, timeout=3.0: False)
    assert models.resolve_auto() == "scenes-mix"
    notice = capsys.readouterr().err
    assert "ViT-B/32" in notice and "scenes" in notice and len(notice.strip().splitlines()) == 1


def test_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model"):
        load_clip("no-such-model", "cpu")
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="broken.pt"):
        load_clip(str(tmp_path / "broken.pt"), "cpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA"):
            resolve_device("cuda:0")
    with pytest.raises(UserError, match="77 tokens"):
        load_clip("tiny", "cpu").encode_text(["word " * 100])
    with pytest.raises(UserError, match="empty"):
        load_clip("tiny", "cpu").encode_text(["   "])


def test_missing_or_damaged_model_files_are_one_line_user_errors(tmp_path, monkeypatch):
    from core import scenes_clip

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model\xff" * 10)
    pointer = tmp_path / "pointer.pt"
    pointer.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 4117771\n")
    foreign = tmp_path / "foreign.pt"
    torch.save({"token_ids": [1, 2]}, foreign)  # looks like a scenes file, but is not one
    problems = {garbage: "damaged", pointer: "Git LFS pointer", foreign: "not a scenes CLIP file"}
    for file, problem in {**problems, tmp_path / "missing.pt": "missing"}.items():
        monkeypatch.setitem(scenes_clip.SHIPPED, "scenes", file)  # a shipped file gone or broken
        with pytest.raises(UserError, match=problem) as caught:
            load_clip("scenes", "cpu")
        assert str(file) in str(caught.value) and "\n" not in str(caught.value)
    for file, problem in problems.items():  # the same files given as --model FILE
        with pytest.raises(UserError, match=problem) as caught:
            load_clip(str(file), "cpu")
        assert str(file) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_damaged_model_file_is_one_line_on_the_command_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model\xff" * 10)
    result = run_script("normal.py", "a red circle", "--model", str(garbage), "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read model weights {garbage}: damaged")


def test_resolve_device_auto():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.gpu
def test_cuda_encode_under_bf16_autocast():
    clip = load_clip("tiny", "cuda")
    pixels = torch.rand(4, 3, 32, 32, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        embeddings = clip.encode_images(pixels)
    embeddings.float().sum().backward()
    assert embeddings.dtype == torch.float32 and pixels.grad.abs().sum() > 0


def test_critic_resolution(monkeypatch, tmp_path, capsys):
    assert critics.resolve_critic("auto", "scenes") == "scenes-critic"
    assert critics.resolve_critic("auto", "scenes-critic") == "scenes"  # never its own critic
    assert critics.resolve_critic("auto", "tiny") == ""  # nothing natural to pair with a test model
    assert critics.resolve_critic("none", "scenes") == "" and critics.resolve_critic("", "scenes") == ""
    assert critics.resolve_critic("scenes-judge", "scenes") == "scenes-judge"
    with pytest.raises(UserError, match="another model"):
        critics.resolve_critic("scenes", "scenes")
    weights = tmp_path / "weights" / "guide.pt"  # a weights file is named by its file name, however given
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    with pytest.raises(UserError, match="another model"):
        critics.resolve_critic(str(weights), "guide.pt")
    monkeypatch.setenv("HOME", str(tmp_path))  # nothing cached, nothing reachable: the guide alone, said once
    monkeypatch.setattr(models, "_download_reachable", lambda name, timeout=3.0: False)
    assert critics.resolve_critic("auto", "ViT-B/32") == ""
    assert "RN50" in capsys.readouterr().err
    monkeypatch.setattr(models, "_download_reachable", lambda name, timeout=3.0: True)
    assert critics.resolve_critic("auto", "ViT-B/32") == "RN50"
    assert critics.resolve_critic("auto", "RN50") == "ViT-B/16"


def test_a_scenes_critic_scores_only_the_bakes_of_a_scenes_guide(tmp_path, capsys):
    # the quick recipe names scenes-judge; a photo CLIP's images mean nothing to a 48 px model of drawn scenes
    for guide in ("tiny", "ViT-B/32", "open_clip:ViT-B-32/laion2b_s34b_b79k", "scenes+0.5*ViT-B/32"):
        assert critics.resolve_critic("scenes-judge", guide) == "", guide
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "knows only drawn scenes" in err, err
    assert critics.resolve_critic("scenes-judge", "scenes-mix") == "scenes-judge"
    assert critics.resolve_critic("scenes-judge", "scenes+0.3*scenes-critic") == "scenes-judge"
    assert critics.resolve_critic("RN50", "tiny") == "RN50"  # a model that is not a scenes one is taken as named
    copy = tmp_path / "my-guide.pt"  # a weights file recognised as a scenes model keeps the critic
    copy.write_bytes(SHIPPED["scenes"].read_bytes())
    guide = load_clip(str(copy), "cpu")
    assert guide.known_as == "scenes" and critics.resolve_critic("scenes-judge", guide) == "scenes-judge"
    assert capsys.readouterr().err == ""
