"""The critic's caption contrast: a bake's critic also asks that the image be told from captions that differ
from a scene prompt in one stated attribute (core.meta_loss.Critic, core.losses.caption_contrast)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.bake import bake_prompts
from core.bake_settings import BakeSettings
from core.losses import caption_contrast, spherical_distance
from core.meta_loss import CONTRAST_SCALE, Critic, encode_contrast, replay_loss
from core.render import Pipeline, RenderSettings, final_embeddings
from core.scene_prompts import contrast_captions, parse_scene_prompt

SMALL = RenderSettings(size=32, steps_per_stage=3, cutn=2)
PROMPTS = ["a red circle on the left", "a lemon", "a blue star above a green square"]


def test_contrast_captions_name_the_prompt_first_then_its_one_attribute_twins():
    groups = contrast_captions("A picture of a red circle on the left.")
    assert [group[0] for group in groups] == ["a red circle on the left"] * 3  # canonical wording first
    colours, shapes, positions = groups
    assert "a blue circle on the left" in colours and "a red square on the left" in shapes
    assert "a red circle on the right" in positions
    for group in groups:  # every twin is a scene prompt that differs in exactly one stated value
        prompt = parse_scene_prompt(group[0]).objects[0]
        for twin in group[1:]:
            other = parse_scene_prompt(twin).objects[0]
            changed = [prompt.colour != other.colour, prompt.shape != other.shape, prompt.position != other.position]
            assert sum(changed) == 1, twin
        assert len(set(group)) == len(group)
    relation = contrast_captions("a blue star above a green square")
    assert len(relation) == 3 and relation[2][1:] == ["a blue star below a green square",
                                                      "a green square above a blue star"]
    assert contrast_captions("a lemon") == [] and contrast_captions("a red circle | text:-1") == []


def test_caption_contrast_is_the_cross_entropy_of_the_first_caption():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 8, generator=generator, requires_grad=True)  # 2 images, 3 views
    captions = torch.randn(2, 2, 4, 8, generator=generator)
    mask = torch.ones(2, 2, 4, dtype=torch.bool)
    mask[0, 1, 2:] = False  # a group of two captions
    mask[1] = False  # an image without any group (not a scene prompt)
    loss = caption_contrast(images, captions, mask, 20.0)
    # by hand: image 0, every view, both groups
    unit, text = F.normalize(images[0].detach(), dim=-1), F.normalize(captions[0], dim=-1)
    expected = []
    for view in range(3):
        for group, count in ((0, 4), (1, 2)):
            logits = 20.0 * text[group, :count] @ unit[view]
            expected.append(-torch.log_softmax(logits, dim=0)[0])
    assert math.isclose(loss[0].item(), torch.stack(expected).mean().item(), rel_tol=1e-5)
    assert loss[1].item() == 0.0
    loss.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad[1].abs().max() == 0  # no NaN from the empty rows
    padded = captions.clone()
    padded[0, 1, 2:] = 100.0  # what lies in the padding does not count
    assert torch.allclose(caption_contrast(images, padded, mask, 20.0), loss)
    # the loss falls as the image turns toward its caption and away from the twins
    toward = captions[:, :, :1].mean(dim=1).expand(2, 3, 8) * 10
    assert caption_contrast(toward, captions, mask, 20.0)[0] < loss[0]


def test_critic_adds_the_contrast_for_scene_prompts_only(tiny_clip):
    contrast, mask = encode_contrast(tiny_clip, PROMPTS)
    assert contrast.shape[:3] == mask.shape == (3, 3, 15) and contrast.shape[3] == tiny_clip.embed_dim
    assert mask[0].sum(dim=1).tolist() == [8, 7, 5] and not mask[1].any() and mask[2].sum() == 15 + 13 + 3
    targets = tiny_clip.encode_text(PROMPTS)
    plain = Critic(tiny_clip, targets)
    critic = Critic(tiny_clip, targets, 1.0, contrast, mask, contrast_weight=0.5)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    distance = spherical_distance(final_embeddings(tiny_clip, images), targets[:, None]).mean(dim=1)
    assert torch.allclose(plain.loss(images, 0, 0), distance, atol=1e-6)
    with_contrast = critic.loss(images, 0, 0)
    assert (with_contrast[[0, 2]] > distance[[0, 2]]).all()  # a cross-entropy is > 0
    assert math.isclose(with_contrast[1].item(), distance[1].item(), abs_tol=1e-6)  # "a lemon": distance alone
    # rows / repeated / twice carry the contrast with their prompts
    assert torch.allclose(critic.twice().loss(torch.cat([images, images]), 0, 0), with_contrast.repeat(2), atol=1e-6)
    assert torch.allclose(critic.repeated(2).loss(images.repeat_interleave(2, dim=0), 0, 0),
                          with_contrast.repeat_interleave(2), atol=1e-6)
    assert torch.allclose(critic.rows(2, 2).loss(images[2:].repeat(2, 1, 1, 1), 0, 0), with_contrast[2].repeat(2),
                          atol=1e-6)
    assert CONTRAST_SCALE == 20.0


def test_the_contrast_reaches_the_guides_and_changes_the_bake(tiny_clip):
    prompts = PROMPTS[:1]
    embeddings = tiny_clip.encode_text(prompts)
    contrast, mask = encode_contrast(tiny_clip, prompts)
    critic = Critic(tiny_clip, embeddings, 1.0, contrast, mask, contrast_weight=1.0)
    guides = embeddings[:, None].repeat(1, 2, 1).requires_grad_(True)
    pipeline = Pipeline.build(SMALL, tiny_clip)
    loss = replay_loss(tiny_clip, guides, embeddings, SMALL, [0], 0, 1, pipeline, unroll=1, critic=critic)
    loss.sum().backward()
    per_stage = guides.grad[0].norm(dim=-1)
    assert torch.isfinite(per_stage).all() and (per_stage > 0).all()
    bake = BakeSettings(stages=2, meta_steps=2, meta_lr=0.01, eval_starts=1)
    with_contrast = bake_prompts(tiny_clip, embeddings, SMALL, bake, seeds=[0], critic=critic).guides
    plain = bake_prompts(tiny_clip, embeddings, SMALL, bake, seeds=[0], critic=Critic(tiny_clip, embeddings)).guides
    assert torch.isfinite(with_contrast).all()
    moved = (plain - embeddings[:, None]).norm()
    assert (with_contrast - plain).norm() > 0.01 * moved  # the contrast steers the meta-gradient elsewhere
