"""The attack a robust guide is trained on (core/adversarial.py) and its use in training (CPU, seeded)."""

import clip
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import small_scenes_clip
from core.adversarial import pgd_images
from core.drawn_negatives import DrawnNegatives
from core.models import normalise_images
from core.train_scenes_clip import (TRAINING_CONTEXT, TrainSettings, _adversarial_half, _train_step, make_slot_head,
                                   training_batch)


def _distances(moved: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (moved - images).flatten(1).norm(dim=1)


def test_attack_stays_in_the_ball_and_in_range_and_raises_the_loss():
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    direction = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))

    def loss_of(candidates):
        return (candidates * direction).sum()

    moved = pgd_images(loss_of, images, radius=0.5, steps=4, generator=torch.Generator().manual_seed(2))
    assert not moved.requires_grad
    assert (_distances(moved, images) <= 0.5 + 1e-5).all()
    assert 0 <= moved.min() and moved.max() <= 1
    # A linear loss is raised most by the full radius along its gradient; the attack gets close to that.
    best = 0.5 * direction.norm() * 3
    assert loss_of(moved) - loss_of(images) > 0.9 * best


def test_attack_is_reproducible_and_zero_radius_leaves_images_alone():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def loss_of(candidates):
        return (candidates ** 2).sum()

    first = pgd_images(loss_of, images, 0.3, 2, torch.Generator().manual_seed(5))
    again = pgd_images(loss_of, images, 0.3, 2, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    assert torch.equal(pgd_images(loss_of, images, 0.0, 2), images)


def test_training_batch_half_is_pushed_toward_wrong_captions():
    model = small_scenes_clip()
    images, captions, _ = training_batch(np.random.default_rng(0), 8, 48)
    tokens = clip.tokenize(captions, context_length=TRAINING_CONTEXT)
    mixed = _adversarial_half(model, images, tokens, radius=1.0, steps=3, generator=torch.Generator().manual_seed(0))
    assert model.training  # back in training mode for the step
    assert torch.equal(mixed[4:], images[4:])
    assert (_distances(mixed[:4], images[:4]) <= 1.0 + 1e-5).all()
    assert (_distances(mixed[:4], images[:4]) > 0.1).all()

    model.eval()
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokens[:4]).float(), dim=-1)

        def loss(batch):
            image = F.normalize(model.encode_image(normalise_images(batch)).float(), dim=-1)
            return F.cross_entropy(model.logit_scale.exp() * image @ text.T, torch.arange(4))

        assert loss(mixed[:4]) > loss(images[:4])


@pytest.mark.parametrize("hardening", [dict(adversarial=1.0, attack_steps=2),
                                       dict(negatives=DrawnNegatives(count=3, steps=2))], ids=["attack", "drawn"])
def test_a_hardened_training_step_updates_the_model_with_finite_losses(hardening):
    """A step with the adversarial half or with drawn negatives (core/drawn_negatives.py) trains the model."""
    model = small_scenes_clip()
    head = make_slot_head(512)
    optimiser = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    before = model.visual.conv1.weight.detach().clone()
    contrastive, slot = _train_step(model, head, optimiser, np.random.default_rng(1),
                                    TrainSettings(batch_size=8, **hardening), 48, torch.Generator().manual_seed(1))
    assert np.isfinite(contrastive) and np.isfinite(slot) and model.training
    assert not torch.equal(model.visual.conv1.weight, before)
