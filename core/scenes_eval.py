"""Held-out zero-shot evaluation of a scenes CLIP: does it pick the true caption among near misses?

On freshly drawn scenes (use a seed no training run used), each image is scored against candidate
captions that differ from the true one in exactly one attribute:
- colour:   'a red circle' vs 'a green circle', 'a blue circle', ... (every colour)
- shape:    'a red circle' vs 'a red square', 'a red star', ... (every shape)
- position: 'a red circle on the left' vs '... on the right', '... at the top', ... (every position)
- relation: 'a red circle to the left of a blue square' vs 'a red circle to the right of a blue square'
            and 'a blue square to the left of a red circle' (the objects swapped)
A scene counts as right when the true caption scores highest.

    python -m core.scenes_eval          # markdown table for the shipped models
"""

from __future__ import annotations

import argparse
import dataclasses

import clip
import numpy as np
import torch

from core import cli, scenes
from core.models import normalise_images
from core.scenes_clip import SHIPPED, load_scenes_clip

ATTRIBUTES = ("colour", "shape", "position", "relation")


def _candidates(scene: scenes.Scene, attribute: str) -> list[str]:
    """The true caption of `scene` first, then captions that differ from it in `attribute` only."""
    if attribute == "relation":
        first, second = scene.objects
        return [scenes.relation_caption(first, scene.relation, second),
                scenes.relation_caption(first, scenes.OPPOSITE_RELATION[scene.relation], second),
                scenes.relation_caption(second, scene.relation, first)]
    obj = scene.objects[0]
    if attribute == "colour":
        variants = [obj.colour] + [c for c in scenes.COLOURS if c != obj.colour]
        return [scenes.object_phrase(_with(obj, colour=c)) for c in variants]
    if attribute == "shape":
        variants = [obj.shape] + [s for s in scenes.SHAPES if s != obj.shape]
        return [scenes.object_phrase(_with(obj, shape=s)) for s in variants]
    if attribute == "position":
        variants = [obj.position] + [p for p in scenes.POSITIONS if p != obj.position]
        return [scenes.one_object_caption(_with(obj, position=p)) for p in variants]
    raise ValueError(f"unknown attribute {attribute!r}")


def _with(obj: scenes.SceneObject, **changes) -> scenes.SceneObject:
    """A copy of `obj` with some names changed (only used to write captions)."""
    return dataclasses.replace(obj, **changes)


@torch.no_grad()
def retrieval_accuracy(model, images: torch.Tensor, candidate_lists: list[list[str]], device) -> float:
    """Fraction of images [N, 3, H, W] in [0, 1] whose first candidate caption scores highest."""
    image_features = model.encode_image(normalise_images(images.to(device))).float()
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    all_texts = sorted({text for candidates in candidate_lists for text in candidates})
    text_features = model.encode_text(clip.tokenize(all_texts).to(device)).float()
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    row_of = {text: row for row, text in enumerate(all_texts)}
    correct = 0
    for image_feature, candidates in zip(image_features, candidate_lists):
        scores = text_features[[row_of[text] for text in candidates]] @ image_feature
        correct += int(scores.argmax().item() == 0)
    return correct / len(candidate_lists)


def zero_shot_accuracy(model, image_size: int | None = None, n: int = 200, seed: int = 12345,
                       device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy per attribute (colour, shape, position, relation) on `n` fresh scenes each from `seed`.

    Scenes are drawn at `image_size` pixels (default: the model's input resolution) and resized to the
    model's input resolution if needed.
    """
    resolution = model.visual.input_resolution
    image_size = image_size or resolution
    rng = np.random.default_rng(seed)
    accuracy = {}
    for attribute in ATTRIBUTES:
        n_objects = 2 if attribute == "relation" else 1
        batch = [scenes.sample_scene(rng, n_objects=n_objects) for _ in range(n)]
        images = torch.stack([scenes.render_scene(scene, image_size) for scene in batch])
        if image_size != resolution:
            images = torch.nn.functional.interpolate(images, size=(resolution, resolution), mode="bilinear",
                                                     antialias=True, align_corners=False)
        accuracy[attribute] = retrieval_accuracy(model, images, [_candidates(s, attribute) for s in batch], device)
    return accuracy


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per model, one column per attribute, percentages."""
    lines = ["| model | " + " | ".join(ATTRIBUTES) + " |", "|---|" + "---|" * len(ATTRIBUTES)]
    for name, accuracy in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * accuracy[a]:.1f} %" for a in ATTRIBUTES) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="scenes per attribute")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the fresh scenes")
    parser.add_argument("--models", nargs="+", default=list(SHIPPED), help="shipped names or files")
    args = parser.parse_args()
    results = {name: zero_shot_accuracy(load_scenes_clip(name), n=args.n, seed=args.seed) for name in args.models}
    print(markdown_table(results))


if __name__ == "__main__":
    cli.run(main)  # a missing or damaged model file: one line on stderr, no traceback
