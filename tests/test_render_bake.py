"""The renderer and the bake on the tiny model: exact small facts and the two bake guarantees."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from core.bake import bake_prompts
from core.bake_settings import BakeSettings
from core.meta_loss import initial_guides, replay_loss
from core.losses import range_penalty, spherical_distance, total_variation
from core.render import (AdamState, Pipeline, RenderSettings, adam_update, blend, learning_rate, random_pixels,
                         replay)

SMALL = RenderSettings(size=32, steps_per_stage=4, cutn=4)


def test_spherical_distance_exact():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, -5.0]])
    expected = torch.tensor([0.0, 2 * (math.pi / 4) ** 2, 2 * (math.pi / 4) ** 2])
    assert torch.allclose(spherical_distance(x, y), expected, atol=1e-6)


def test_regularisers_exact():
    flat = torch.full((1, 3, 4, 4), 0.5)
    assert total_variation(flat).item() == 0.0
    assert range_penalty(flat).item() == 0.0
    stripes = torch.zeros(1, 3, 4, 4)
    stripes[..., 1::2] = 1.0  # every horizontal neighbour differs by 1
    assert total_variation(stripes).item() == pytest.approx(1.0)
    assert range_penalty(torch.full((2, 3, 2, 2), 1.5)).tolist() == pytest.approx([0.25, 0.25])


def test_functional_adam_matches_torch_adamw():
    torch.manual_seed(0)
    reference = torch.randn(5, requires_grad=True)
    optimizer = torch.optim.AdamW([reference], lr=0.1, weight_decay=0.01)
    pixels = reference.detach().clone()
    state = AdamState(torch.zeros(5), torch.zeros(5))
    for step in range(4):
        grad = torch.randn(5)
        reference.grad = grad.clone()
        optimizer.step()
        update, state = adam_update(grad, pixels, state, lr=0.1, weight_decay=0.01)
        pixels = pixels + update
        assert torch.allclose(pixels, reference.detach(), atol=1e-6), step


def test_random_pixels_per_prompt_and_seeded():
    both = random_pixels([1, 2], 8, torch.device("cpu"))
    alone = random_pixels([2], 8, torch.device("cpu"))
    assert torch.equal(both[1], alone[0])  # a prompt's start does not depend on the batch
    assert not torch.equal(both[0], both[1])
    assert both.min() >= -1 and both.max() <= 1


def test_path_of_prompt_stages_is_a_normal_run(tiny_clip):
    """One Adam across stages: S stages aimed at the prompt == one stage of S x steps."""
    embedding = tiny_clip.encode_text(["a red circle"])
    start = random_pixels([3], SMALL.size, tiny_clip.device)
    staged = replay(tiny_clip, initial_guides(embedding, 3), SMALL, start, view_seed=5)
    plain = RenderSettings(**{**SMALL.__dict__, "steps_per_stage": 3 * SMALL.steps_per_stage})
    single = replay(tiny_clip, embedding[:, None], plain, start, view_seed=5)
    assert torch.allclose(staged, single, atol=1e-6)


def test_replay_lowers_the_guide_loss(tiny_clip):
    embedding = tiny_clip.encode_text(["a blue square"])
    pipeline = Pipeline.build(SMALL, tiny_clip)
    losses = []
    replay(tiny_clip, initial_guides(embedding, 2), SMALL, random_pixels([0], 32, tiny_clip.device),
           on_step=lambda step, pixels, loss: losses.append(loss.item()), pipeline=pipeline)
    assert len(losses) == 8
    assert losses[-1] < losses[0]


def test_lr_end_decays_the_learning_rate_over_the_run(tiny_clip):
    """`lr_end` 1 keeps lr for every step; below 1 the rate falls by a cosine from lr at the first step to
    lr * lr_end at the last, and the run then moves its pixels less than the constant-rate one in the last steps."""
    assert {learning_rate(SMALL, step, 8) for step in range(8)} == {SMALL.lr}
    decayed = replace(SMALL, lr_end=0.1)
    rates = [learning_rate(decayed, step, 8) for step in range(8)]
    assert rates[0] == pytest.approx(SMALL.lr) and rates[-1] == pytest.approx(0.1 * SMALL.lr)
    assert all(later < earlier for earlier, later in zip(rates, rates[1:]))
    embedding = tiny_clip.encode_text(["a blue square"])
    moves = {}
    for name, settings in (("constant", SMALL), ("decayed", decayed)):
        pixels = []
        replay(tiny_clip, initial_guides(embedding, 2), settings, random_pixels([0], 32, tiny_clip.device),
               on_step=lambda step, now, loss: pixels.append(now))
        moves[name] = (pixels[-1] - pixels[-2]).abs().mean().item()
    assert moves["decayed"] < 0.5 * moves["constant"], moves


def test_blend_weights():
    stages = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    prompt = torch.nn.functional.normalize(torch.randn(4), dim=-1)
    assert torch.allclose(blend(stages, prompt, 0.0), stages)
    assert torch.allclose(blend(stages, prompt, 1.0), prompt.expand(3, 4))
    assert torch.allclose(blend(stages, prompt, 0.3), 0.7 * stages + 0.3 * prompt)


def test_meta_loss_reaches_the_guides(tiny_clip):
    """(a) The final-image loss has a non-zero gradient w.r.t. every stage's guide."""
    embedding = tiny_clip.encode_text(["a red circle"])
    guides = initial_guides(embedding, 3).requires_grad_(True)
    pipeline = Pipeline.build(SMALL, tiny_clip)
    loss = replay_loss(tiny_clip, guides, embedding, SMALL, [0], draw=0, starts=1, pipeline=pipeline, unroll=1)
    loss.sum().backward()
    per_stage = guides.grad[0].norm(dim=-1)
    assert torch.isfinite(per_stage).all()
    assert (per_stage > 0).all(), per_stage


def test_without_unroll_no_gradient_reaches_the_guides(tiny_clip):
    """The original's defect, kept as a check of what `unroll` buys: with no unroll the graph is cut."""
    embedding = tiny_clip.encode_text(["a red circle"])
    guides = initial_guides(embedding, 2).requires_grad_(True)
    pipeline = Pipeline.build(SMALL, tiny_clip)
    loss = replay_loss(tiny_clip, guides, embedding, SMALL, [0], draw=0, starts=1, pipeline=pipeline, unroll=0)
    assert not loss.requires_grad


def test_baked_path_beats_initial_path_on_unseen_starts(tiny_clip):
    """(b) After baking, replays from starts never used in baking end at a lower mean meta-loss."""
    embeddings = tiny_clip.encode_text(["a red circle", "a blue square"])
    bake = BakeSettings(stages=3, meta_steps=40, meta_lr=0.01, unroll=1, eval_starts=2)
    result = bake_prompts(tiny_clip, embeddings, SMALL, bake, seeds=[1, 2])
    pipeline = Pipeline.build(SMALL, tiny_clip)
    unseen = [1000, 2000]  # seeds never used by the bake
    with torch.no_grad():
        baked = replay_loss(tiny_clip, result.guides, embeddings, SMALL, unseen, draw=0, starts=6,
                            pipeline=pipeline, view_seed=99).mean()
        initial = replay_loss(tiny_clip, initial_guides(embeddings, 3), embeddings, SMALL, unseen, draw=0,
                              starts=6, pipeline=pipeline, view_seed=99).mean()
    assert baked < initial, (baked.item(), initial.item())
    assert len(result.curve) == 40
    assert result.guides.shape == (2, 3, 512)


def test_batched_bake_equals_one_by_one(tiny_clip):
    """Baking P prompts together gives the same guides as baking each alone with the same seeds."""
    embeddings = tiny_clip.encode_text(["a red circle", "a green star", "a yellow cross"])
    bake = BakeSettings(stages=2, meta_steps=3, meta_lr=0.01, unroll=1, eval_starts=1)
    together = bake_prompts(tiny_clip, embeddings, SMALL, bake, seeds=[4, 5, 6], view_seed=3)
    for index, seed in enumerate([4, 5, 6]):
        alone = bake_prompts(tiny_clip, embeddings[index:index + 1], SMALL, bake, seeds=[seed], view_seed=3)
        # Tolerances scale with what the bake changed: float rounding differs between batch shapes and CPUs
        # (measured up to 1.9e-5 on an AMD EPYC, 0.06 % of the guides' movement); a prompt that saw another
        # prompt's starts or views would differ by a good share of the movement itself.
        moved = (alone.guides[0] - initial_guides(embeddings[index:index + 1], 2)[0]).abs().max()
        assert moved > 1e-3
        assert (together.guides[index] - alone.guides[0]).abs().max() <= 0.01 * moved
        effect = (alone.baked_loss[0] - alone.normal_loss[0]).abs()
        assert effect > 1e-4
        assert (together.baked_loss[index] - alone.baked_loss[0]).abs() <= 0.01 * effect


@pytest.mark.slow
def test_compiled_encoder_gives_the_same_run(tiny_clip):
    """`--compile` changes speed, not results (and unrolled steps still use the eager encoder)."""
    from core.models import load_clip

    compiled = load_clip("tiny", "cpu", compile=True)
    embedding = tiny_clip.encode_text(["a red circle"])
    settings = RenderSettings(size=32, steps_per_stage=2, cutn=2)
    start = random_pixels([0], 32, tiny_clip.device)
    eager = replay(tiny_clip, initial_guides(embedding, 2), settings, start)
    fast = replay(compiled, initial_guides(embedding, 2), settings, start)
    assert compiled.compiled
    assert torch.allclose(eager, fast, atol=1e-4)


@pytest.mark.parametrize("meta", ["cma", "ga"])
def test_evolutionary_bakes_stay_in_trust_region_and_log_their_curve(tiny_clip, meta):
    embeddings = tiny_clip.encode_text(["a red circle", "a blue square"])
    settings = RenderSettings(size=32, steps_per_stage=2, cutn=2)
    bake = BakeSettings(stages=2, meta_steps=3, meta=meta, population=4, starts=2, sigma=0.05,
                        trust_angle=0.2, eval_starts=1)
    points = []
    result = bake_prompts(tiny_clip, embeddings, settings, bake, seeds=[0, 1],
                          on_meta_step=lambda step, point: points.append(point))
    angles = torch.arccos(torch.nn.functional.cosine_similarity(result.guides, embeddings[:, None], dim=-1)
                          .clamp(-1, 1))
    assert (angles <= 0.2 + 1e-4).all()
    assert len(points) == 2 * 3  # a generation of each prompt's search
    assert len(result.curve) == 3 and len(result.curve[0]["meta_loss"]) == 2
    assert result.metrics(0)["meta"]["meta"] == meta


def test_bf16_autocast_runs_every_meta_optimiser(tiny_clip, monkeypatch):
    """CUDA runs CLIP under bf16 autocast: the same on CPU checks that no step mixes dtypes.

    Every meta-optimiser (a critic and augmented meta-views included) bakes float32 guides that move, and
    a bf16 replay ends near the fp32 one (bf16 keeps 8 bits of mantissa; Adam's normalised steps turn
    rounding of tiny gradients into whole steps on a few pixels, so the mean difference is compared).
    """
    from core import render
    from core.anchors import prompt_anchors
    from core.meta_loss import Critic
    from core.meta_optimisers import META_OPTIMIZERS
    from core.models import load_clip

    prompts = ["a red circle", "a blue square"]
    embeddings = tiny_clip.encode_text(prompts)
    settings = RenderSettings(size=32, steps_per_stage=2, cutn=2)
    start = random_pixels([0, 1], 32, tiny_clip.device)
    full = replay(tiny_clip, initial_guides(embeddings, 2), settings, start)
    monkeypatch.setattr(render, "autocast_for", lambda device: torch.autocast("cpu", dtype=torch.bfloat16))
    half = replay(tiny_clip, initial_guides(embeddings, 2), settings, start)
    assert half.dtype == torch.float32
    assert (half - full).abs().mean() < 0.01, (half - full).abs().mean()

    other = load_clip("tiny", "cpu")  # a second model as the critic (same weights; only dtypes matter here)
    critic = Critic(other, other.encode_text(prompts), weight=0.5)
    anchors = prompt_anchors(tiny_clip, prompts, 2)
    for meta in META_OPTIMIZERS:
        bake = BakeSettings(stages=2, meta_steps=2, meta=meta, meta_lr=0.01, population=4, meta_views=2,
                            eval_starts=1)
        result = bake_prompts(tiny_clip, embeddings, settings, bake, seeds=[0, 1], critic=critic, anchors=anchors)
        assert result.guides.dtype == torch.float32, meta
        assert torch.isfinite(result.guides).all() and torch.isfinite(result.baked_loss).all(), meta
        assert not torch.allclose(result.guides, initial_guides(embeddings, 2)), meta


def test_batched_evolution_projects_each_prompt_onto_its_own_trust_region(tiny_clip):
    """The elitist ES mutates all prompts' paths in one population; each prompt's mutants must be
    projected around that prompt (in the free space a shared projection would pull every path to the first
    prompt's region)."""
    from core.meta_optimisers import _batched_evolution
    from core.render import Pipeline

    prompts = ["a red circle", "a blue square", "a green star"]
    embeddings = tiny_clip.encode_text(prompts)
    settings = RenderSettings(size=32, steps_per_stage=1, cutn=1)
    bake = BakeSettings(stages=2, meta_steps=3, population=3, sigma=0.5, trust_angle=0.2)
    pipeline = Pipeline.build(settings, tiny_clip, bake.stages * settings.steps_per_stage)
    guides, _ = _batched_evolution("free")(tiny_clip, embeddings, settings, bake, [0, 1, 2], 0, pipeline,
                                           lambda step, point: None)
    unit_guides = torch.nn.functional.normalize(guides, dim=-1)
    unit_prompts = torch.nn.functional.normalize(embeddings, dim=-1)
    angles = torch.arccos((unit_guides * unit_prompts[:, None]).sum(-1).clamp(-1, 1))  # [prompt, stage]
    assert (angles <= bake.trust_angle + 1e-4).all(), angles
    assert (angles > 0.01).any(), "the search moved the guides"
