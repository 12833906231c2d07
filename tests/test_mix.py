"""Guides of several models (`--model A+0.3*B`, the shipped `scenes-mix`): names, loss, critic, a bake, errors."""
from __future__ import annotations

import pytest
import torch

from core.bake import bake_prompts
from core.bake_settings import BakeSettings
from core.errors import UserError
from core.losses import spherical_distance
from core.critics import resolve_critic
from core.models import ClipMix, load_clip, mix_members, model_name
from core.render import RenderSettings, guide_loss, Pipeline, random_pixels
from core.scenes_clip import SHIPPED, read_scenes_clip_file
from inprocess import run_in_process

PROMPTS = ["a red circle", "a blue star on the left"]
SMALL = RenderSettings(size=32, steps_per_stage=2, cutn=2, drawer={"outlines": {"count": 4, "backdrop": "grey"}})


@pytest.fixture(scope="module")
def mix():
    """Two models of different image sizes (32 and 48 px): the random `tiny` and half of `scenes-critic`."""
    return load_clip("tiny+0.5*scenes-critic", "cpu")


def test_names_parse_and_print_in_one_form():
    assert mix_members("scenes-mix") == [(1.0, "scenes"), (0.3, "scenes-shapes")]
    assert mix_members("scenes") is None and mix_members("tiny") is None
    assert model_name("scenes + 0.30*scenes-shapes") == "scenes+0.3*scenes-shapes"
    assert model_name("scenes-mix") == "scenes-mix"


@pytest.mark.parametrize("name, words", [
    ("scenes+x*tiny", "bad weight"), ("scenes+0*tiny", "above 0"), ("scenes+nan*tiny", "above 0"),
    ("scenes+1000*tiny", "at most"), ("scenes+scenes", "twice"), ("scenes+", "a named model in every term"),
    ("scenes-mix+tiny", "a mix itself"), ("auto+0.3*scenes", "not auto"), ("scenes+nosuchmodel", "unknown model"),
])
def test_bad_mixes_are_user_errors(name, words):
    with pytest.raises(UserError, match=words):
        load_clip(name, "cpu")


def test_a_bad_mix_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    ran = run_in_process("normal.py", ["a red circle", "--model", "tiny+-1*scenes", "--size", "32"], tmp_path)
    assert ran.code == 2 and "Traceback" not in ran.err
    assert len(ran.err.strip().splitlines()) == 1 and "weight" in ran.err


def test_embeddings_join_the_members_and_the_cosine_is_their_weighted_mean(mix):
    tiny, critic = mix.members
    assert isinstance(mix, ClipMix) and mix.embed_dim == tiny.embed_dim + critic.embed_dim and mix.image_size == 48
    images = torch.rand(3, 3, 40, 40)
    text, pictures = mix.encode_text(PROMPTS[:1]), mix.encode_images(images)
    assert torch.allclose(text.norm(dim=-1), torch.ones(1), atol=1e-5)
    cosines = [torch.nn.functional.cosine_similarity(member.encode_images(images), member.encode_text(PROMPTS[:1]))
               for member in mix.members]
    weighted = (cosines[0] + 0.5 * cosines[1]) / 1.5
    joined = torch.nn.functional.cosine_similarity(pictures, text)
    assert torch.allclose(joined, weighted, atol=1e-5)


def test_the_guides_loss_is_each_members_distance_times_its_weight(mix):
    images = torch.rand(2, 3, 32, 32)
    targets = mix.encode_text(PROMPTS)
    tiny, critic = mix.members
    expected = (spherical_distance(tiny.encode_images(images), tiny.encode_text(PROMPTS))
                + 0.5 * spherical_distance(critic.encode_images(images), critic.encode_text(PROMPTS)))
    got = mix.distance(mix.encode_images(images), targets)
    assert torch.allclose(got, expected, rtol=1e-4)
    # the guide's loss in the renderer uses it: changing a member's weight changes the loss
    pipeline = Pipeline.build(SMALL, mix)
    pixels = pipeline.drawer.init([0, 1], mix.device)
    heavier = load_clip("tiny+2*scenes-critic", "cpu")
    losses = [guide_loss(clip, pixels, targets, SMALL, pipeline, 0.0, torch.Generator().manual_seed(0))
              for clip in (mix, heavier)]
    assert (losses[1] > losses[0]).all()


def test_the_critic_of_a_mix_is_never_a_member(capsys):
    assert resolve_critic("auto", "scenes-mix") == "scenes-critic"
    assert resolve_critic("scenes-judge", "scenes-mix") == "scenes-judge"
    for critic, guide in [("scenes-shapes", "scenes-mix"), ("scenes-mix", "scenes-mix"),
                          ("scenes+0.5*scenes-judge", "scenes-mix"), ("scenes-judge+scenes", "scenes")]:
        with pytest.raises(UserError, match="another model than the guide"):
            resolve_critic(critic, guide)
    # the first member's partner is in the mix: no critic, with a one-line notice
    assert resolve_critic("auto", "scenes-critic+scenes") == ""
    assert "outside the mix" in capsys.readouterr().err


def test_a_mix_bakes_and_its_meta_gradient_reaches_every_stage(mix):
    prompt_embeddings = mix.encode_text(PROMPTS)
    bake = BakeSettings(stages=2, meta_steps=2, eval_starts=1, meta_lr=1e-2, critic="")
    result = bake_prompts(mix, prompt_embeddings, SMALL, bake, seeds=[0, 1])
    assert result.guides.shape == (2, 2, mix.embed_dim)
    assert torch.isfinite(result.guides).all()
    moved = (result.guides - prompt_embeddings[:, None]).norm(dim=-1)
    assert (moved > 1e-4).all()  # both stages of both prompts were changed by the meta-gradient


def test_the_shipped_shape_model_is_the_guides_size_and_says_how_it_was_trained():
    payload = read_scenes_clip_file("scenes-shapes")
    guide = read_scenes_clip_file("scenes")
    assert payload["arch"] == guide["arch"]
    # its stages (README, "Two guides"): from scratch with half shape twins, then a gentle adversarial stage
    first, last = payload["training"]["init_from"], payload["training"]
    assert first["shape_twins"] == 0.5 and first["adversarial"] == 0.0 and first["init_from"] is None
    assert last["shape_twins"] == 0.5 and last["adversarial"] == 0.75
    assert SHIPPED["scenes-shapes"].stat().st_size <= 10 * 1024 * 1024
    pixels = random_pixels([0], 48, torch.device("cpu"))
    assert torch.isfinite(load_clip("scenes-mix", "cpu").encode_images((pixels + 1) / 2)).all()
