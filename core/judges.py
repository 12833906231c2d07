"""evaluate.py's judges: a CLIP (`scenes-judge`, any `--model` name) or the classifier judge
(`scenes-classifier`, core/classifier_judge.py) behind one interface.

    judge = load_judge("scenes-judge", "cpu")
    judge.score(images, prompts)                        # [N]: the mean judge score's terms (0-100)
    judge.choose(images, prompts, "colour")             # [N] bool: the stated colour picked over the others
    attribute_choices(judge, images, prompts)           # {"colour": [True, None, ...], "shape": [...], ...}

A CLIP scores an image by its cosine similarity x 100 to the prompt and chooses an attribute by ranking the
prompt's canonical wording against its variants that differ in that attribute only (core.scene_prompts), as
core/scenes_eval.py does for drawn scenes: right when the stated caption is the most similar. The classifier
scores with `ClassifierJudge.score` x 100 and chooses with its own `choose` (see docs/judge.md); it judges
scene prompts only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from core.classifier_judge import ClassifierJudge, is_classifier_judge, load_classifier_judge
from core.errors import UserError
from core.models import Clip, load_clip, resolve_device
from core.scene_prompts import ATTRIBUTES, attributes, parse_scene_prompt, variants


@dataclass
class ClipJudge:
    """A CLIP as a judge."""

    clip: Clip

    @property
    def name(self) -> str:
        return self.clip.name

    def _image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.nn.functional.normalize(self.clip.encode_images(images.to(self.clip.device)), dim=-1)

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Cosine similarity x 100 of each image [N, 3, H, W] to its prompt."""
        texts = self.clip.encode_text(prompts, truncate=True)
        return (self._image_embeddings(images) * texts).sum(dim=-1).cpu() * 100

    def choose(self, images: torch.Tensor, prompts: list[str], attribute: str) -> torch.Tensor:
        """[N] bool: each prompt's wording is more similar to its image than every variant that differs from
        it in `attribute` only. Every prompt must be a scene prompt that states the attribute."""
        candidates = []
        for prompt in prompts:
            parsed = parse_scene_prompt(prompt)
            others = variants(parsed, attribute) if parsed is not None else []
            if not others:
                raise ValueError(f"{prompt!r} does not state a {attribute}")
            candidates.append([parsed.text()] + [other.text() for other in others])
        texts = sorted({text for options in candidates for text in options})
        row_of = {text: row for row, text in enumerate(texts)}
        similarities = self._image_embeddings(images) @ self.clip.encode_text(texts, truncate=True).T  # [N, T]
        return torch.tensor([int(similarities[index, [row_of[text] for text in options]].argmax()) == 0
                             for index, options in enumerate(candidates)], dtype=torch.bool)


@dataclass
class ClassifierJudgeAdapter:
    """The classifier judge as a judge: score x 100 (a probability in percent), its own choose."""

    classifier: ClassifierJudge

    @property
    def name(self) -> str:
        return self.classifier.name

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.classifier.score(images, prompts) * 100

    def choose(self, images: torch.Tensor, prompts: list[str], attribute: str) -> torch.Tensor:
        return self.classifier.choose(images, prompts, attribute)


Judge = ClipJudge | ClassifierJudgeAdapter


def load_judge(name: str, device: str | torch.device = "cpu") -> Judge:
    """The judge `--judge NAME` means: the classifier judge (a shipped name or its file), else a CLIP."""
    if is_classifier_judge(name):
        return ClassifierJudgeAdapter(load_classifier_judge(name, resolve_device(str(device))))
    return ClipJudge(load_clip(name, device))


def check_scene_prompts(judge_names: list[str], prompts: list[str]) -> None:
    """A one-line UserError when a classifier judge is asked to judge a prompt that is not a scene prompt."""
    classifiers = [name for name in judge_names if is_classifier_judge(name)]
    other = next((prompt for prompt in prompts if parse_scene_prompt(prompt) is None), None)
    if classifiers and other is not None:
        raise UserError(f"the classifier judge {classifiers[0]} only judges scene prompts ('a red circle on the "
                        f"left', 'a red circle above a blue square'), not {other!r}")


def attribute_choices(judge: Judge, images: torch.Tensor, prompts: list[str]) -> dict[str, list[bool | None]]:
    """For each attribute (colour, shape, position, relation) and each image [N, 3, H, W] with its prompt:
    whether the judge picks the stated value over the others (None: the prompt does not state that attribute,
    or is not a scene prompt)."""
    parsed = [parse_scene_prompt(prompt) for prompt in prompts]
    choices: dict[str, list[bool | None]] = {}
    for attribute in ATTRIBUTES:
        stated = [index for index, scene in enumerate(parsed) if scene is not None and attribute in attributes(scene)]
        column: list[bool | None] = [None] * len(prompts)
        if stated:
            picked = judge.choose(images[stated], [prompts[index] for index in stated], attribute)
            for index, right in zip(stated, picked.tolist()):
                column[index] = bool(right)
        choices[attribute] = column
    return choices
