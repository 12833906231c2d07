"""Drawn negatives: what the renderer's own optimiser draws for a caption, shown to a guide in training as
an image the caption must not pick.

A guide trained on clean scenes alone can be fooled: optimising outlines against it raises its similarity
with blobs that show no shape (`python -m core.guide_gap`). Here a few captions of each training batch get
an image drawn for them by the quick recipe's drawer (outlines on grey), a few Adam steps against the guide
as it is now; the training loss then asks each caption to pick its clean scene over every drawn image. Once
the drawn blobs stop matching, the guide's gradient can only raise its similarity by drawing what a clean
scene shows — the way a GAN's discriminator teaches its generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.drawers import build_drawer
from core.models import normalise_images

# The quick recipe's drawer, which these negatives stand for, without its later roundness pull and half-pixel
# edges (the shipped guide was trained with these, so a re-run of its training command reproduces it).
DRAWER = {"outlines": {"count": 16, "gain": 0.25, "backdrop": "grey", "opacity": 0.0}}


@dataclass(frozen=True)
class DrawnNegatives:
    """How the negatives are drawn: `count` captions a batch, `steps` Adam steps at `lr`, view noise `noise`."""

    count: int = 32
    steps: int = 10
    lr: float = 0.2
    noise: float = 0.2


def draw_for_captions(model, text_units: torch.Tensor, size: int, settings: DrawnNegatives,
                      generator: torch.Generator) -> torch.Tensor:
    """Images [N, 3, size, size] in [0, 1] drawn for N captions (unit text embeddings [N, D]) by optimising
    the drawer's parameters against `model`'s image tower; the model's weights get no gradient."""
    drawer = build_drawer(DRAWER, size)
    seeds = torch.randint(0, 2**31 - 1, (len(text_units),), generator=generator).tolist()
    params = drawer.init(seeds, text_units.device).requires_grad_(True)
    optimiser = torch.optim.Adam([params], lr=settings.lr)
    was_training = model.training
    model.eval()  # batch-norm statistics are not trained by the drawing
    for _ in range(settings.steps):
        images = drawer.image(params)
        noisy = images + settings.noise * torch.randn(images.shape, generator=generator).to(images.device)
        embeddings = F.normalize(model.encode_image(normalise_images(noisy.clamp(0, 1))).float(), dim=-1)
        loss = (1 - (embeddings * text_units).sum(dim=-1)).sum()
        (grad,) = torch.autograd.grad(loss, params)
        params.grad = grad
        optimiser.step()
    model.train(was_training)
    with torch.no_grad():
        return drawer.image(params).clamp(0, 1)


def contrastive_with_negatives(image_units: torch.Tensor, text_units: torch.Tensor, drawn_units: torch.Tensor,
                               scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of B image-caption pairs where each caption also has to pass over the drawn images
    [N, D] (extra candidates that belong to no caption); images still choose among the B captions only."""
    targets = torch.arange(len(image_units))
    logits_per_image = scale * image_units @ text_units.T
    logits_per_text = scale * text_units @ torch.cat([image_units, drawn_units]).T
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2
