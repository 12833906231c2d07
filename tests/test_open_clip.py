"""open_clip models (`--model open_clip:ARCH/PRETRAINED`), offline: a small random-init open_clip architecture
saved to a local file (and served from a fake Hugging Face cache) renders, bakes and replays; critic pairing."""
from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

from conftest import run_script
from core import models, open_clip_models
from core.bake import bake_prompts
from core.bake_settings import BakeSettings
from core.meta_loss import Critic, initial_guides, replay_loss
from core.errors import UserError
from core.critics import resolve_critic
from core.models import CLIP_MEAN, CLIP_STD, load_clip, model_name
from core.open_clip_models import OPENAI_ARCHS, clip_constructor_args, open_clip_critic_candidates
from core.render import Pipeline, RenderSettings, random_pixels, replay
from core.paths import BakedPath, check_compatible, load_path
from core.store import save_path

open_clip = pytest.importorskip("open_clip")  # pinned in requirements.txt; a clear skip if a setup lacks it

ARCH = "bake-test-vit"  # a small ViT + text tower, registered with open_clip for these tests only
CONFIG = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
SMALL = RenderSettings(size=32, steps_per_stage=3, cutn=2)
HUB_REPO = "bake-test/tiny-open-clip"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The architecture registered, a seeded random init of it, and its state dict saved to a file."""
    folder = tmp_path_factory.mktemp("open_clip")
    (folder / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model(ARCH).eval()
    file = folder / "tiny-open-clip.pt"
    torch.save(model.state_dict(), file)
    return file, model


@pytest.fixture(scope="module")
def guide(checkpoint):
    return load_clip(f"open_clip:{ARCH}/{checkpoint[0]}", "cpu")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty Hugging Face cache and an empty ~/.cache/clip; returns the Hub cache folder."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(models, "_download_reachable", lambda name, timeout=3.0: False)
    return hub


def _cache_on_hub(hub, repo: str, state_dict: dict | None = None) -> None:
    """Lay out the Hugging Face cache as a download of `repo`'s open_clip_model.safetensors would."""
    from safetensors.torch import save_file

    revision = "0" * 40
    snapshot = hub / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(revision)
    tensors = {key: value.contiguous() for key, value in (state_dict or {"x": torch.zeros(1)}).items()}
    save_file(tensors, str(snapshot / "open_clip_model.safetensors"))


def test_loads_by_name_and_file(checkpoint, guide, monkeypatch):
    file, reference = checkpoint
    assert guide.name == f"open_clip:{ARCH}/tiny-open-clip.pt" == model_name(f"open_clip:{ARCH}/{file}")
    assert (guide.embed_dim, guide.image_size) == (256, 32)  # the architecture's, not ViT-B/32's 512 and 224
    preprocess = open_clip.get_model_preprocess_cfg(guide.model)
    assert (guide.mean, guide.std) == (tuple(preprocess["mean"]), tuple(preprocess["std"]))
    assert not guide.model.training and not any(p.requires_grad for p in guide.model.parameters())
    monkeypatch.chdir(file.parent)  # a relative file name records the same model
    relative = load_clip(f"open_clip:{ARCH}/{file.name}", "cpu")
    assert relative.name == guide.name
    tokens = open_clip.get_tokenizer(ARCH)(["a red circle"])
    with torch.no_grad():
        expected = F.normalize(reference.encode_text(tokens), dim=-1)
    assert torch.allclose(relative.encode_text(["a red circle"]), expected, atol=1e-6)
    images = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(guide.mean).view(1, 3, 1, 1), torch.tensor(guide.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(guide.encode_images(images), reference.encode_image((images - mean) / std), atol=1e-5)


def test_unknown_names_and_unfit_checkpoints_are_one_line_errors(checkpoint, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a model\xff" * 10)
    other = tmp_path / "other-architecture.pt"
    torch.save(models.build_tiny_clip().state_dict(), other)  # a CLIP, but not of this architecture's shapes
    cases = {f"open_clip:{ARCH}/{garbage}": f"cannot load {garbage} as open_clip's {ARCH}",
             f"open_clip:{ARCH}/{other}": f"cannot load {other} as open_clip's {ARCH}",
             f"open_clip:{ARCH}/missing.pt": f"'missing.pt' is neither a pretrained tag of open_clip's {ARCH} nor a file",
             "open_clip:ViT-B-32x/openai": "unknown open_clip architecture 'ViT-B-32x' (did you mean ViT-B-32",
             f"open_clip:{ARCH}": "open_clip models are named open_clip:ARCH/PRETRAINED"}
    for name, message in cases.items():
        with pytest.raises(UserError, match=re.escape(message)) as caught:
            load_clip(name, "cpu")
        assert "\n" not in str(caught.value), name


def test_models_of_the_clip_package_keep_openai_normalisation(tiny_clip):
    images = torch.rand(2, 3, 32, 32)
    by_hand = (images - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(tiny_clip.encode_images(images), tiny_clip.model.encode_image(by_hand).float())
    assert tiny_clip.text_tokenizer is None and (tiny_clip.mean, tiny_clip.std) == (CLIP_MEAN, CLIP_STD)


def test_tokenizer_checks_the_length_like_the_clip_package(guide, tiny_clip):
    embeddings = guide.encode_text(["a red circle", "a blue square"])
    assert embeddings.shape == (2, 256) and not embeddings.requires_grad
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)
    fits, too_long = "a " * 75, "a " * 76  # 'a' is one token; start and end tokens make 77 and 78
    assert guide.tokenize([fits]).shape == (1, 77) and tiny_clip.tokenize([fits]).shape == (1, 77)
    for clip in (guide, tiny_clip):
        with pytest.raises(UserError, match=r"77 tokens \(use --truncate\)") as caught:
            clip.encode_text(["a cat", too_long])
        assert "\n" not in str(caught.value)
    assert guide.encode_text([too_long], truncate=True).shape == (1, 256)
    with pytest.raises(UserError, match="empty"):
        guide.encode_text(["  "])


def test_tag_loads_from_the_hub_cache_offline_with_its_own_preprocessing(checkpoint, offline, monkeypatch):
    file, reference = checkpoint
    _cache_on_hub(offline, HUB_REPO, reference.state_dict())
    tags = {"fake_hub": {"hf_hub": f"{HUB_REPO}/", "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3),
                         "quick_gelu": True},
            "not_cached": {"hf_hub": "bake-test/absent/"}}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, ARCH, tags)  # open_clip's table of tags, private
    monkeypatch.setattr(open_clip_models, "_url_reachable", lambda url: pytest.fail(f"network asked: {url}"))
    clip = load_clip(f"open_clip:{ARCH}/Fake-Hub", "cpu")  # open_clip's tag spelling is recorded
    assert clip.name == f"open_clip:{ARCH}/fake_hub" == model_name(f"open_clip:{ARCH}/Fake-Hub")
    assert (clip.mean, clip.std) == ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))  # the tag's config, not OpenAI's
    activation = clip.model.visual.transformer.resblocks[0].mlp.gelu
    assert type(activation).__name__ == "QuickGELU"  # the tag was trained with it
    assert torch.equal(clip.model.visual.conv1.weight, reference.visual.conv1.weight)
    monkeypatch.setattr(open_clip_models, "_url_reachable", lambda url: False)
    with pytest.raises(UserError, match=r"not cached and cannot be downloaded \(offline\?\)") as caught:
        load_clip(f"open_clip:{ARCH}/not_cached", "cpu")
    assert "\n" not in str(caught.value)


def test_render_bake_and_replay_through_open_clip(guide, tiny_clip, tmp_path, capsys):
    prompts = ["a red circle"]
    embeddings = guide.encode_text(prompts)
    # the unrolled meta-gradient reaches every stage's guide through open_clip's attention (math kernel)
    guides = initial_guides(embeddings, 2).requires_grad_(True)
    loss = replay_loss(guide, guides, embeddings, SMALL, [0], draw=0, starts=1, pipeline=Pipeline.build(SMALL, guide),
                       unroll=1)
    loss.sum().backward()
    per_stage = guides.grad[0].norm(dim=-1)
    assert torch.isfinite(per_stage).all() and (per_stage > 0).all(), per_stage
    # a bake of two meta-steps, scored by a critic of the other library (its own embedding size)
    critic = Critic(tiny_clip, tiny_clip.encode_text(prompts))
    bake = BakeSettings(stages=2, meta_steps=2, meta_lr=0.01, eval_starts=1)
    result = bake_prompts(guide, embeddings, SMALL, bake, seeds=[0], critic=critic)
    assert result.guides.shape == (1, 2, 256) and torch.isfinite(result.guides).all()
    assert not torch.allclose(result.guides, initial_guides(embeddings, 2))
    path = BakedPath(prompt=prompts[0], guides=result.guides[0], prompt_embedding=embeddings[0],
                     model_name=guide.name, embed_dim=guide.embed_dim, metrics=result.metrics(0))
    loaded = load_path(save_path(tmp_path / "store", path))
    assert loaded.model_name == f"open_clip:{ARCH}/tiny-open-clip.pt"
    check_compatible(loaded, guide.embed_dim, guide.name)
    assert capsys.readouterr().err == ""  # same model: not even a warning
    start = random_pixels([7], SMALL.size, guide.device)
    with torch.no_grad():
        replayed = replay(guide, loaded.guides[None], SMALL, start, view_seed=3)
        again = replay(guide, result.guides, SMALL, start, view_seed=3)
    assert torch.isfinite(replayed).all() and torch.allclose(replayed, again, atol=1e-5)
    other = BakedPath(prompt="x", guides=torch.zeros(2, 512), prompt_embedding=None, model_name="tiny", embed_dim=512)
    with pytest.raises(UserError, match="512-dim guides from tiny, but open_clip") as caught:
        check_compatible(other, guide.embed_dim, guide.name)
    assert "\n" not in str(caught.value)


@pytest.mark.gpu
def test_cuda_meta_gradient_through_open_clip_under_bf16(checkpoint):
    clip = load_clip(f"open_clip:{ARCH}/{checkpoint[0]}", "cuda")
    embeddings = clip.encode_text(["a red circle"])
    guides = initial_guides(embeddings, 2).requires_grad_(True)
    loss = replay_loss(clip, guides, embeddings, SMALL, [0], draw=0, starts=1, pipeline=Pipeline.build(SMALL, clip),
                       unroll=1)  # bf16 autocast on CUDA, math attention kernel in the unrolled steps
    loss.sum().backward()
    assert torch.isfinite(guides.grad).all() and (guides.grad[0].norm(dim=-1) > 0).all()


def test_critic_pairing_table():
    assert open_clip_critic_candidates("open_clip:ViT-B-32/laion2b_s34b_b79k") == ("open_clip:RN50/openai", "RN50")
    assert open_clip_critic_candidates("open_clip:ViT-B-32/openai") == ("open_clip:RN50/openai", "RN50")
    assert open_clip_critic_candidates("open_clip:ViT-L-14/my.pt") == ("open_clip:RN50/openai", "RN50")
    convolutional = ("open_clip:ViT-B-16/laion2b_s34b_b88k", "ViT-B/16")
    assert open_clip_critic_candidates("open_clip:RN50/openai") == convolutional
    assert open_clip_critic_candidates("open_clip:convnext_base_w/laion2b_s13b_b82k") == convolutional
    with pytest.raises(UserError, match="another model"):  # the same model, whichever way its tag is spelt
        resolve_critic("open_clip:ViT-B-32/LAION2B-S34B-B79K", "open_clip:ViT-B-32/laion2b_s34b_b79k")


def test_critic_auto_for_open_clip_guides_is_used_only_when_cached(offline, capsys):
    guide_name = "open_clip:ViT-B-32/laion2b_s34b_b79k"
    assert resolve_critic("auto", guide_name) == ""
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "baking with the guide alone" in notice[0] and "open_clip:RN50/openai" in notice[0]
    clip_cache = offline.parent / ".cache" / "clip"  # the clip package's RN50 alone: the fallback
    clip_cache.mkdir(parents=True)
    (clip_cache / "RN50.pt").write_bytes(b"weights")
    assert resolve_critic("auto", guide_name) == "RN50"
    repo = open_clip.get_pretrained_cfg("RN50", "openai")["hf_hub"].strip("/")
    _cache_on_hub(offline, repo)  # open_clip's own RN50 cached: preferred
    assert resolve_critic("auto", guide_name) == "open_clip:RN50/openai"
    assert capsys.readouterr().err == ""


def test_openai_architectures_match_open_clip_and_the_clip_package():
    import clip

    assert set(OPENAI_ARCHS) == set(clip.available_models())
    for name, args in OPENAI_ARCHS.items():
        config = open_clip.get_model_config(name.replace("/", "-").replace("@336px", "-336"))
        vision, text = config["vision_cfg"], config["text_cfg"]
        layers = vision["layers"] if isinstance(vision["layers"], int) else tuple(vision["layers"])
        assert (args["embed_dim"], args["image_resolution"], args["vision_layers"], args["vision_width"],
                args["vision_patch_size"]) == (config["embed_dim"], vision["image_size"], layers, vision["width"],
                                               vision["patch_size"]), name
        assert (args["transformer_width"], args["transformer_heads"], args["transformer_layers"],
                args["context_length"], args["vocab_size"]) == (text["width"], text["heads"], text["layers"],
                                                                 text["context_length"], text["vocab_size"]), name


def test_architecture_is_read_back_from_a_model():
    from core.scenes_clip import ARCHS, build_scenes_clip

    for name, arch in ARCHS.items():  # ResNet and ViT image towers
        assert clip_constructor_args(build_scenes_clip(name)) == arch, name


def test_weights_files_pair_like_the_model_they_hold(tmp_path, capsys):
    from core.scenes_clip import SHIPPED

    copied = tmp_path / "my-critic.pt"
    copied.write_bytes(SHIPPED["scenes-critic"].read_bytes())
    guide = load_clip(str(copied), "cpu")
    assert (guide.name, guide.known_as) == ("my-critic.pt", "scenes-critic")
    assert resolve_critic("auto", guide) == "scenes"
    unknown = tmp_path / "mine.pt"
    torch.save(models.build_tiny_clip().state_dict(), unknown)  # an architecture no named model has
    assert load_clip(str(unknown), "cpu").known_as == ""
    capsys.readouterr()
    assert resolve_critic("auto", load_clip(str(unknown), "cpu")) == ""
    assert resolve_critic("auto", "my-critic.pt") == ""  # by name alone a file cannot be recognised
    notices = capsys.readouterr().err.strip().splitlines()
    assert len(notices) == 2 and all("baking with the guide alone" in line for line in notices)
    assert "mine.pt" in notices[0] and "my-critic.pt" in notices[1]


@pytest.mark.slow
def test_a_copied_openai_weights_file_pairs_the_named_models_critic(tmp_path, monkeypatch, capsys):
    """A ViT-B/32-shaped state dict (random, fp16 like OpenAI's) loaded as a file pairs RN50, or says why not."""
    import clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = clip.model.CLIP(**OPENAI_ARCHS["ViT-B/32"]).half()
    file = tmp_path / "ViT-B-32.pt"
    torch.save(model.state_dict(), file)
    del model
    guide = load_clip(str(file), "cpu")
    assert (guide.name, guide.known_as, guide.embed_dim) == ("ViT-B-32.pt", "ViT-B/32", 512)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(models, "_download_reachable", lambda name, timeout=3.0: True)
    assert resolve_critic("auto", guide) == "RN50"
    monkeypatch.setattr(models, "_download_reachable", lambda name, timeout=3.0: False)
    assert resolve_critic("auto", guide) == ""
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "RN50" in notice[0] and "guide alone" in notice[0]


@pytest.mark.slow
@pytest.mark.parametrize("model, message", [
    ("open_clip:NOPE/none", "error: unknown open_clip architecture 'NOPE'"),
    ("open_clip:ViT-B-32/laion2b_s34b_b79k", "error: open_clip weights open_clip:ViT-B-32/laion2b_s34b_b79k are "
                                             "not cached and cannot be downloaded (offline?)"),
    ("open_clip:ViT-B-32/no-such-tag", "error: 'no-such-tag' is neither a pretrained tag of open_clip's ViT-B-32"),
])
def test_unknown_or_uncached_models_are_one_line_on_the_command_line(tmp_path, model, message):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HOME": str(tmp_path)}
    result = run_script("normal.py", "x", "--model", model, "--device", "cpu", cwd=tmp_path, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), result.stderr
