"""The anchored path parametrisation (core.anchors) and the bakes that search it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.anchors import Anchors, anchored_guides, content_words, prompt_anchors
from core.bake import bake_prompts
from core.bake_settings import BakeSettings
from core.meta_loss import initial_guides
from core.render import RenderSettings


def test_content_words():
    assert content_words("a red circle on the left") == ["red", "circle", "left"]
    assert content_words("A Red red circle | a blue square:0.5") == ["red", "circle", "blue", "square"]
    assert content_words("photo.png | a cat:-1") == ["cat"]
    assert content_words("one two three four", limit=2) == ["one", "two"]


def test_prompt_anchors_pad_and_mask(tiny_clip):
    anchors = prompt_anchors(tiny_clip, ["a red circle on the left", "a star"])
    assert anchors.embeddings.shape == (2, 4, 512)  # generic + 3 words of the longer prompt
    assert anchors.mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    generic = tiny_clip.encode_text([""], allow_empty=True)[0]
    red = F.normalize(tiny_clip.encode_text(["red"]), dim=-1)[0]
    assert torch.allclose(anchors.embeddings[0, 0], generic, atol=1e-6)
    assert torch.allclose(anchors.embeddings[0, 1], red, atol=1e-6)
    assert anchors.embeddings[1, 2:].abs().sum() == 0


def test_anchored_guides_exact():
    prompt = torch.tensor([[2.0, 0.0, 0.0]])
    anchors = Anchors(torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]), torch.tensor([[1.0, 0.0]]))
    coefficients = torch.tensor([[[0.0, 0.0], [1.0, 5.0], [-1.0, 0.0]]])  # stages x anchors
    guides = anchored_guides(prompt, anchors, coefficients)
    root_half = 2 ** -0.5
    expected = torch.tensor([[[1.0, 0.0, 0.0], [root_half, root_half, 0.0], [root_half, -root_half, 0.0]]])
    assert torch.allclose(guides, expected, atol=1e-6)  # the masked anchor's weight 5 does nothing


def test_zero_weights_are_the_normal_path(tiny_clip):
    prompts = ["a red circle", "a blue square at the top"]
    embeddings = tiny_clip.encode_text(prompts)
    anchors = prompt_anchors(tiny_clip, prompts)
    guides = anchored_guides(embeddings, anchors, torch.zeros(2, 3, anchors.count))
    assert torch.allclose(guides, initial_guides(F.normalize(embeddings, dim=-1), 3), atol=1e-6)


@pytest.mark.parametrize("meta", ["anchored", "anchored-cma", "anchored-es"])
def test_anchored_bakes_move_the_weights_within_bounds(tiny_clip, meta):
    prompts = ["a red circle", "a blue square on the left"]
    embeddings = tiny_clip.encode_text(prompts)
    anchors = prompt_anchors(tiny_clip, prompts)
    settings = RenderSettings(size=32, steps_per_stage=2, cutn=2)
    bake = BakeSettings(stages=2, meta_steps=3, meta=meta, population=4, starts=1, sigma=0.5, anchor_lr=0.5,
                        anchor_limit=0.5, eval_starts=1)
    result = bake_prompts(tiny_clip, embeddings, settings, bake, seeds=[0, 1], anchors=anchors)
    normal = initial_guides(F.normalize(embeddings, dim=-1), 2)
    assert result.guides.shape == (2, 2, 512)
    assert (result.guides - normal).abs().max() > 1e-3  # the search moved the path
    # every stage target lies in the span of the prompt and its anchors, at most anchor_limit away per anchor
    for index in range(2):
        basis = torch.cat([F.normalize(embeddings[index:index + 1], dim=-1), anchors.embeddings[index]])
        solution = torch.linalg.lstsq(basis.T, result.guides[index].T).solution  # [K+1, S]
        assert torch.allclose(basis.T @ solution, result.guides[index].T, atol=1e-4)
        weights = solution[1:] / solution[:1]  # relative to the prompt's weight, before normalising
        present = anchors.mask[index].bool()
        assert (weights[present].abs() <= 0.5 + 1e-3).all()


def test_anchored_bake_needs_anchors(tiny_clip):
    embeddings = tiny_clip.encode_text(["a red circle"])
    bake = BakeSettings(stages=2, meta_steps=1, meta="anchored", eval_starts=1)
    with pytest.raises(ValueError, match="anchors"):
        bake_prompts(tiny_clip, embeddings, RenderSettings(size=32, steps_per_stage=1, cutn=1), bake, seeds=[0])
