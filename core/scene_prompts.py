"""Scene prompts: what a prompt about drawn scenes states, as objects with a colour, shape and position.

    parse_scene_prompt("a red circle on the left")
        # ScenePrompt(objects=(PromptObject('red', 'circle', 'left'),), relation=None)
    parse_scene_prompt("a red circle to the left of a blue square")
        # ScenePrompt(objects=(PromptObject('red', 'circle', 'left'), PromptObject('blue', 'square', 'right')),
        #             relation='to the left of')
    parse_scene_prompt("a lemon")            # None: not a scene prompt
    variants(parsed, "colour")               # the prompts that differ from it in one object's colour only

A scene prompt is, ignoring case, a final full stop and surrounding spaces:
    [prefix] OBJECT [POSITION]            e.g. "a picture of a large red circle at the top"
    [prefix] OBJECT RELATION OBJECT       e.g. "a red circle above a blue square"
  with OBJECT = "a|an [small|large] COLOUR SHAPE", optionally followed by "on a GREY background", and the
  words and phrases of core.scenes (COLOURS, SHAPES, POSITION_PHRASES, RELATIONS, CAPTION_PREFIXES).
Anything else (weighted targets, "and", other words) is not a scene prompt. The objects of a relation prompt
carry the positions the relation implies ("to the left of": left and right).
Nothing here depends on a model: evaluation uses it for the classifier judge and for caption choices alike.
"""

from __future__ import annotations

import dataclasses
import re

from core.scenes import (BACKGROUNDS, CAPTION_PREFIXES, COLOURS, OPPOSITE_RELATION, POSITION_PHRASES, POSITIONS,
                         RELATIONS, SHAPES, SIZES, with_article)

ATTRIBUTES = ("colour", "shape", "position", "relation")

_OBJECT = re.compile(rf"an? (?:(?:{'|'.join(SIZES)}) )?({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})")
_BACKGROUND = re.compile(rf" on an? (?:{'|'.join(BACKGROUNDS)}) background$")
# Longest phrases first, so "in the left half" is not cut at a shorter phrase.
_POSITION_OF_PHRASE = dict(sorted(((phrase, position) for position, phrases in POSITION_PHRASES.items()
                                   for phrase in phrases), key=lambda item: -len(item[0])))


@dataclasses.dataclass(frozen=True)
class PromptObject:
    """One object a prompt names; `position` is None when the prompt does not say where it is."""

    colour: str
    shape: str
    position: str | None = None

    def phrase(self) -> str:
        """'a red circle', 'an orange star'."""
        return with_article(f"{self.colour} {self.shape}")


@dataclasses.dataclass(frozen=True)
class ScenePrompt:
    """One object (maybe with a position), or two objects in a `relation` ("to the left of", "above", ...)."""

    objects: tuple[PromptObject, ...]
    relation: str | None = None

    def text(self) -> str:
        """The canonical wording: 'a red circle on the left', 'a red circle above a blue square'."""
        if self.relation is not None:
            first, second = self.objects
            return f"{first.phrase()} {self.relation} {second.phrase()}"
        only = self.objects[0]
        return only.phrase() + (f" {POSITION_PHRASES[only.position][0]}" if only.position else "")


def parse_scene_prompt(prompt: str) -> ScenePrompt | None:
    """The objects and relation a scene prompt states, or None when `prompt` is not a scene prompt."""
    text = " ".join(prompt.lower().strip().rstrip(".").split())
    for prefix in sorted(CAPTION_PREFIXES, key=len, reverse=True):
        if prefix and text.startswith(prefix) and _OBJECT.match(text, len(prefix)):
            text = text[len(prefix):]
            break
    text = _BACKGROUND.sub("", text)
    for relation, (first_position, second_position) in RELATIONS.items():
        first_text, found, second_text = text.partition(f" {relation} ")
        if found:
            first, second = _object(first_text, first_position), _object(second_text, second_position)
            return None if first is None or second is None else ScenePrompt((first, second), relation)
    for phrase, position in _POSITION_OF_PHRASE.items():
        if text.endswith(f" {phrase}"):
            only = _object(text[: -len(phrase) - 1], position)
            return None if only is None else ScenePrompt((only,))
    only = _object(text, None)
    return None if only is None else ScenePrompt((only,))


def _object(text: str, position: str | None) -> PromptObject | None:
    """The object an object phrase ('a large red circle') names, or None."""
    match = _OBJECT.fullmatch(text)
    return None if match is None else PromptObject(match.group(1), match.group(2), position)


def attributes(scene_prompt: ScenePrompt) -> tuple[str, ...]:
    """The attributes a prompt states: colour and shape always; position (one object with a place) or relation."""
    if scene_prompt.relation is not None:
        return ("colour", "shape", "relation")
    return ("colour", "shape", "position") if scene_prompt.objects[0].position else ("colour", "shape")


def variants(scene_prompt: ScenePrompt, attribute: str) -> list[ScenePrompt]:
    """The prompts that differ from `scene_prompt` in `attribute` only (empty when it does not state it).

    colour, shape: every other value for one object at a time (each object of a relation prompt in turn);
    position: every other position of a one-object prompt with a position;
    relation: the opposite relation, and the same relation with the objects swapped (both state the
    swapped arrangement, as core.scenes_eval's candidates do).
    """
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; use one of {ATTRIBUTES}")
    if attribute not in attributes(scene_prompt):
        return []
    objects = scene_prompt.objects
    if attribute == "relation":
        first, second = objects
        return [ScenePrompt(objects, OPPOSITE_RELATION[scene_prompt.relation]),
                ScenePrompt((dataclasses.replace(second, position=first.position),
                             dataclasses.replace(first, position=second.position)), scene_prompt.relation)]
    values = {"colour": COLOURS, "shape": SHAPES, "position": POSITIONS}[attribute]
    found = []
    for index, obj in enumerate(objects):
        for value in values:
            if value != getattr(obj, attribute):
                changed = list(objects)
                changed[index] = dataclasses.replace(obj, **{attribute: value})
                found.append(ScenePrompt(tuple(changed), scene_prompt.relation))
    return found


def contrast_captions(prompt: str) -> list[list[str]]:
    """Per attribute a scene prompt states: its canonical wording, then every caption that differs from it in
    that attribute alone (a bake's critic asks that the image be told from them). [] for other prompts."""
    scene_prompt = parse_scene_prompt(prompt)
    if scene_prompt is None:
        return []
    return [[scene_prompt.text(), *(variant.text() for variant in variants(scene_prompt, attribute))]
            for attribute in attributes(scene_prompt)]
