"""Held-out accuracy of the classifier judge, on both renderers, and what it says about noise and blank images.

    python -m core.classifier_judge_eval                    # markdown tables for models/scenes-classifier.pt

Accuracy is the judge's choice (ClassifierJudge.choose) on fresh scenes of a seed no training run used:
colour, shape and position on one-object scenes (the canonical prompt, e.g. 'a red circle on the left'),
relation on two-object scenes ('a red circle to the left of a blue square' against the swapped
arrangement), and "beside another": on two-object scenes, 'a red circle on the left' chosen where the red
circle is on the left and not chosen where only the other object is (position bound to colour). Two worlds: the second renderer (core/other_scenes.py, which the judge was trained on, fresh
scenes) and core/scenes.py (the guide's world, which the judge never saw), at the judge's 48 px and at
128 px. Then noise and blank images: how sure the judge is of anything there, how often it picks a
prompt's value, and the mean score of the evaluation prompts.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from core import cli, other_scenes, scenes
from core.classifier_judge import HEADS, NONE, ClassifierJudge, load_classifier_judge
from core.errors import UserError
from core.scene_prompts import ATTRIBUTES, PromptObject, ScenePrompt

RENDERERS = ("second renderer", "core/scenes.py")
EVAL_PROMPTS = ("a purple square", "a red cross on the right", "a green circle to the right of a yellow cross",
                "a blue hexagon at the top", "a yellow square above an orange diamond", "a pink diamond at the top")


def prompt_of(scene) -> str:
    """The canonical prompt of a scene of either renderer (objects with colour, shape, position; relation)."""
    objects = tuple(PromptObject(obj.colour, obj.shape, obj.position) for obj in scene.objects)
    return ScenePrompt(objects, scene.relation).text()


def draw(renderer: str, rng: np.random.Generator, n_objects: int, size: int):
    """One scene of a renderer: (image [3, size, size], scene)."""
    if renderer == "second renderer":
        scene = other_scenes.sample_scene(rng, n_objects)
        return other_scenes.render(scene, size), scene
    scene = scenes.sample_scene(rng, n_objects=n_objects)
    return scenes.render_scene(scene, size), scene


def accuracy(judge: ClassifierJudge, renderer: str, n: int = 500, seed: int = 4242, size: int = 48
             ) -> dict[str, float]:
    """Per attribute, the fraction of `n` fresh scenes where the judge picks the true value; and
    COLUMNS' "beside another": on two-object scenes, the fraction where the position of one object is
    chosen and the other object's position is not (a thing of another colour must not lend its place)."""
    rng = np.random.default_rng(seed)
    results = {}
    for attribute in ATTRIBUTES:
        drawn = [draw(renderer, rng, 2 if attribute == "relation" else 1, size) for _ in range(n)]
        images = torch.stack([image for image, _ in drawn])
        results[attribute] = judge.choose(images, [prompt_of(scene) for _, scene in drawn], attribute).float().mean().item()
    drawn = [draw(renderer, rng, 2, size) for _ in range(n)]
    images = torch.stack([image for image, _ in drawn])
    which = rng.integers(2, size=n)
    objects = [scene.objects[index] for (_, scene), index in zip(drawn, which)]
    others = [scene.objects[1 - index] for (_, scene), index in zip(drawn, which)]
    true = [prompt_of(SimpleScene((obj,))) for obj in objects]
    false = [prompt_of(SimpleScene((dataclasses.replace(obj, position=other.position),)))
             for obj, other in zip(objects, others)]
    right = judge.choose(images, true, "position") & ~judge.choose(images, false, "position")
    results["beside another"] = right.float().mean().item()
    return results


@dataclasses.dataclass
class SimpleScene:
    """Objects without a relation, only to write a prompt (prompt_of)."""

    objects: tuple
    relation: str | None = None


def blank_images(kind: str, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`n` images with no object: noise of several kinds, or uniform images."""
    if kind == "uniform noise (a render's start)":
        return torch.rand(n, 3, size, size, generator=generator)
    if kind == "grey noise":
        return (torch.rand(n, 1, 1, 1, generator=generator) + 0.15 * torch.randn(n, 3, size, size, generator=generator)
                ).clamp(0, 1)
    if kind == "colour clouds (not trained on)":
        coarse = torch.rand(n, 3, 4, 4, generator=generator)
        return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    if kind == "uniform grey":
        return torch.rand(n, 1, 1, 1, generator=generator).expand(n, 3, size, size).clone()
    if kind == "uniform colour":
        return torch.rand(n, 3, 1, 1, generator=generator).expand(n, 3, size, size).clone()
    raise ValueError(f"unknown kind {kind!r}")


BLANK_KINDS = ("uniform noise (a render's start)", "grey noise", "colour clouds (not trained on)", "uniform grey",
               "uniform colour")


def blank_behaviour(judge: ClassifierJudge, n: int = 200, seed: int = 4242, size: int = 48) -> dict[str, dict]:
    """Per kind of blank image: mean P(none) and mean top probability of a named class per head, the mean
    score of EVAL_PROMPTS and how often choose() picks the prompt's value."""
    generator = torch.Generator().manual_seed(seed)
    results = {}
    for kind in BLANK_KINDS:
        images = blank_images(kind, n, size, generator)
        probabilities = judge.probabilities(images)
        row = {}
        for head in ("colour", "shape", "position"):
            classes = HEADS[head]
            row[f"P(none) {head}"] = probabilities[head][:, classes.index(NONE)].mean().item()
            row[f"top named {head}"] = probabilities[head][:, : classes.index(NONE)].max(dim=1).values.mean().item()
        prompts = [EVAL_PROMPTS[index % len(EVAL_PROMPTS)] for index in range(n)]
        row["score"] = judge.score(images, prompts).mean().item()
        row["colour chosen"] = judge.choose(images, prompts, "colour").float().mean().item()
        results[kind] = row
    return results


COLUMNS = (*ATTRIBUTES, "beside another")


def accuracy_table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| scenes | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * values[a]:.1f} %" for a in COLUMNS) + " |")
    return "\n".join(lines)


def blank_table(rows: dict[str, dict]) -> str:
    columns = list(next(iter(rows.values())))
    lines = ["| images | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.2f}" for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = cli.Parser(description=__doc__, formatter_class=cli.Formatter)
    parser.add_argument("--model", default="scenes-classifier", help="shipped name or file")
    parser.add_argument("--n", type=int, default=500, help="scenes per attribute and world")
    parser.add_argument("--seed", type=int, default=4242, help="seed of the fresh scenes (none used in training)")
    args = parser.parse_args()
    if args.n < 1:
        raise UserError("--n must be at least 1")
    torch.set_num_threads(1)
    judge = load_classifier_judge(args.model)
    rows = {f"{renderer}, {size} px": accuracy(judge, renderer, args.n, args.seed, size)
            for size in (48, 128) for renderer in RENDERERS}
    print(accuracy_table(rows))
    print()
    print(blank_table(blank_behaviour(judge, seed=args.seed)))
    print(f"\n(chance for a named class: colour {1 / 8:.2f}, shape {1 / 7:.2f}, position {1 / 5:.2f})")


if __name__ == "__main__":
    cli.run(main)
