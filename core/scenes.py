"""Drawn scenes: coloured shapes on a plain background, with captions.

A scene is one or two flat-coloured shapes on a named background. Everything is drawn by code, so the
ground truth of every image is known: this is what the shipped scenes CLIP is trained on, and what tests
use to judge what an image shows.

    rng = numpy.random.default_rng(0)
    scene = sample_scene(rng)                 # Scene(objects=[SceneObject(...)], background="black")
    image = render_scene(scene, 64)           # float tensor [3, 64, 64] in [0, 1]
    text = caption(scene, rng)                # "a large red circle on the left"
    images, captions, scenes = make_batch(16, seed=0, size=48)

Coordinates are fractions of the image side: x grows to the right, y grows downwards ("top" is y < 0.5).
The same seed always gives the same scenes, captions and pixels.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

# Saturated colours with well separated hues, so a pixel's hue names its colour (see core/pixel_checks.py).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 180, 40),
    "cyan": (30, 210, 220),
    "blue": (40, 60, 230),
    "purple": (140, 40, 200),
    "pink": (235, 50, 180),
}

# Backgrounds are colourless (zero or low saturation), so an object colour never equals the background.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "gray": (128, 128, 128),
    "white": (245, 245, 245),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "hexagon")

# Radius of an object (half its width), as a fraction of the image side: (smallest, largest).
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.12, 0.145),
    "large": (0.195, 0.225),
}

# Where an object's centre sits, as (x, y) fractions of the image side.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}

# How a caption says where an object is; the first phrase is the canonical one used in evaluation.
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "in the left half"),
    "right": ("on the right", "at the right", "in the right half"),
    "top": ("at the top", "on the top", "in the top half"),
    "bottom": ("at the bottom", "on the bottom", "in the bottom half"),
    "center": ("in the center", "in the middle"),
}

# Two-object relations: the phrase, and the positions of (first object, second object) it implies.
RELATIONS: dict[str, tuple[str, str]] = {
    "to the left of": ("left", "right"),
    "to the right of": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}

# The relation that says the same fact from the other object's side ("A left of B" == "B right of A"),
# derived from RELATIONS (the relation whose positions are the other way round) so the two cannot disagree.
OPPOSITE_RELATION: dict[str, str] = {
    relation: next(other for other, other_positions in RELATIONS.items() if other_positions == positions[::-1])
    for relation, positions in RELATIONS.items()
}

CAPTION_PREFIXES: tuple[str, ...] = ("", "a picture of ", "an image of ", "a drawing of ", "a photo of ")

# Random offset of an object's centre (fraction of the image side), so positions are regions, not points.
POSITION_JITTER = 0.04


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One flat-coloured shape: its names, and where exactly it is drawn.

    `centre` (x, y) and `radius` are fractions of the image side; they follow from `position` and `size`
    plus a little random jitter chosen when the scene is sampled.
    """

    colour: str
    shape: str
    size: str
    position: str
    centre: tuple[float, float]
    radius: float


@dataclasses.dataclass(frozen=True)
class Scene:
    """One or two objects on a named background colour.

    With two objects, `relation` says how the first stands to the second ("to the left of", "above", ...).
    """

    objects: tuple[SceneObject, ...]
    background: str
    relation: str | None = None


# ----------------------------------------------------------------------------------------------- sampling


def _choice(rng: np.random.Generator, options) -> str:
    """One element of `options`, drawn with `rng` (kept as a plain Python value)."""
    options = list(options)
    return options[int(rng.integers(len(options)))]


def place_object(rng: np.random.Generator, colour: str, shape: str, size: str, position: str) -> SceneObject:
    """A SceneObject at `position` with `size`, its exact centre and radius jittered by `rng`."""
    low, high = SIZES[size]
    radius = float(rng.uniform(low, high))
    x, y = POSITIONS[position]
    dx, dy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
    return SceneObject(colour, shape, size, position, (float(x + dx), float(y + dy)), radius)


def sample_scene(rng: np.random.Generator, n_objects: int | None = None, p_two_objects: float = 0.5) -> Scene:
    """A random scene with one or two objects (two with probability `p_two_objects` unless `n_objects`).

    Two-object scenes put the objects on opposite sides (left/right or top/bottom) with different colours,
    so a relation caption ("a red circle to the left of a blue square") says exactly which is where.
    """
    if n_objects is None:
        n_objects = 2 if rng.random() < p_two_objects else 1
    background = _choice(rng, BACKGROUNDS)
    if n_objects == 1:
        only = place_object(rng, _choice(rng, COLOURS), _choice(rng, SHAPES), _choice(rng, SIZES),
                            _choice(rng, POSITIONS))
        return Scene((only,), background)
    if n_objects != 2:
        raise ValueError(f"a scene has one or two objects, not {n_objects}")
    relation = _choice(rng, RELATIONS)
    first_position, second_position = RELATIONS[relation]
    first_colour, second_colour = (str(name) for name in rng.choice(list(COLOURS), size=2, replace=False))
    first = place_object(rng, first_colour, _choice(rng, SHAPES), _choice(rng, SIZES), first_position)
    second = place_object(rng, second_colour, _choice(rng, SHAPES), _choice(rng, SIZES), second_position)
    return Scene((first, second), background, relation)


def vary_one_attribute(scene: Scene, rng: np.random.Generator, attribute: str | None = None) -> Scene:
    """A copy of `scene` that differs in exactly one attribute (a hard negative for contrastive training).

    `attribute` is one of "colour", "shape", "size", "position" (one-object scenes), "swap" (two-object
    scenes: the objects trade places) or "background"; None picks one that applies at random.
    """
    two_objects = len(scene.objects) == 2
    if attribute is None:
        choices = ["colour", "shape", "size", "swap", "swap", "background"] if two_objects else [
            "colour", "shape", "size", "position", "position", "background"]
        attribute = _choice(rng, choices)
    if attribute == "background":
        return dataclasses.replace(scene, background=_choice(rng, [b for b in BACKGROUNDS if b != scene.background]))
    if attribute == "swap":
        if not two_objects:
            raise ValueError("only a two-object scene can swap its objects")
        first, second = scene.objects
        # The objects trade places; the relation of the first to the second flips.
        moved_first = dataclasses.replace(first, position=second.position, centre=second.centre)
        moved_second = dataclasses.replace(second, position=first.position, centre=first.centre)
        return Scene((moved_first, moved_second), scene.background, OPPOSITE_RELATION[scene.relation])

    index = int(rng.integers(len(scene.objects)))
    target = scene.objects[index]
    if attribute == "colour":
        taken = {obj.colour for obj in scene.objects}
        changed = dataclasses.replace(target, colour=_choice(rng, [c for c in COLOURS if c not in taken]))
    elif attribute == "shape":
        changed = dataclasses.replace(target, shape=_choice(rng, [s for s in SHAPES if s != target.shape]))
    elif attribute == "size":
        new_size = "small" if target.size == "large" else "large"
        changed = dataclasses.replace(target, size=new_size, radius=float(rng.uniform(*SIZES[new_size])))
    elif attribute == "position":
        if two_objects:
            raise ValueError("objects of a two-object scene change place with attribute='swap'")
        new_position = _choice(rng, [p for p in POSITIONS if p != target.position])
        changed = place_object(rng, target.colour, target.shape, target.size, new_position)
    else:
        raise ValueError(f"unknown attribute {attribute!r}")
    objects = list(scene.objects)
    objects[index] = changed
    return dataclasses.replace(scene, objects=tuple(objects))


def with_duplicate(scene: Scene, rng: np.random.Generator) -> Scene | None:
    """A one-object scene with a second object of the same colour (any shape and size) on the opposite side,
    as a two-object scene with its relation; None for two-object scenes and an object in the centre.

    A hard negative for the one-object caption: "a red star at the bottom" should not match a red star at the
    bottom with a second red thing at the top, which optimised images often show.
    """
    if len(scene.objects) != 1 or scene.objects[0].position == "center":
        return None
    only = scene.objects[0]
    relation = next(name for name, (first, _) in RELATIONS.items() if first == only.position)
    extra = place_object(rng, only.colour, _choice(rng, SHAPES), _choice(rng, SIZES), RELATIONS[relation][1])
    return Scene((only, extra), scene.background, relation)


# ----------------------------------------------------------------------------------------------- captions


def with_article(words: str) -> str:
    """'red circle' -> 'a red circle', 'orange star' -> 'an orange star'."""
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def object_phrase(obj: SceneObject, with_size: bool = False) -> str:
    """'a red circle', or 'a large red circle' with the size."""
    return with_article(f"{obj.size} {obj.colour} {obj.shape}" if with_size else f"{obj.colour} {obj.shape}")


def one_object_caption(obj: SceneObject, with_position: bool = True) -> str:
    """The canonical caption of a one-object scene: 'a red circle on the left' (or without the position)."""
    phrase = object_phrase(obj)
    return f"{phrase} {POSITION_PHRASES[obj.position][0]}" if with_position else phrase


def relation_caption(first: SceneObject, relation: str, second: SceneObject) -> str:
    """The canonical caption of a two-object scene: 'a red circle to the left of a blue square'."""
    return f"{object_phrase(first)} {relation} {object_phrase(second)}"


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A random true caption of `scene`, from several templates.

    One object: 'a red circle', 'a large red circle on the left', 'a picture of a red circle at the top',
    ... Two objects: mostly a relation ('a red circle above a blue square', or the same fact told from the
    other object: 'a blue square below a red circle'), sometimes just both objects, or one object and
    where it is.
    """
    prefix = _choice(rng, CAPTION_PREFIXES)
    suffix = f" on a {scene.background} background" if rng.random() < 0.15 else ""
    if len(scene.objects) == 1:
        obj = scene.objects[0]
        text = object_phrase(obj, with_size=rng.random() < 0.4)
        if rng.random() < 0.65:
            text += " " + _choice(rng, POSITION_PHRASES[obj.position])
        return prefix + text + suffix

    first, second = scene.objects
    kind = rng.random()
    if kind < 0.75:
        with_size = rng.random() < 0.25
        if rng.random() < 0.5:
            text = f"{object_phrase(first, with_size)} {scene.relation} {object_phrase(second, with_size)}"
        else:
            # The same fact from the second object's side: "B right of A" == "A left of B".
            text = (f"{object_phrase(second, with_size)} {OPPOSITE_RELATION[scene.relation]} "
                    f"{object_phrase(first, with_size)}")
    elif kind < 0.85:
        ordered = [first, second] if rng.random() < 0.5 else [second, first]
        text = f"{object_phrase(ordered[0])} and {object_phrase(ordered[1])}"
    else:
        obj = scene.objects[int(rng.integers(2))]
        text = f"{object_phrase(obj)} {_choice(rng, POSITION_PHRASES[obj.position])}"
    return prefix + text + suffix


def caption_words() -> list[str]:
    """Every word a caption can contain (the text vocabulary of the scenes CLIP), sorted."""
    phrases = [*COLOURS, *BACKGROUNDS, *SHAPES, *SIZES, *CAPTION_PREFIXES, *RELATIONS,
               "a an and on background"]
    phrases += [phrase for variants in POSITION_PHRASES.values() for phrase in variants]
    return sorted({word for phrase in phrases for word in phrase.split()})


# ----------------------------------------------------------------------------------------------- drawing


def _inside_polygon(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Boolean mask of points (x, y) inside the polygon `vertices` [N, 2] (crossing-number test)."""
    inside = np.zeros(x.shape, dtype=bool)
    for i in range(len(vertices)):
        x1, y1 = vertices[i]
        x2, y2 = vertices[i - 1]
        if y1 == y2:
            continue  # a horizontal edge is never crossed by a horizontal ray
        crosses = ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / (y2 - y1) + x1)
        inside ^= crosses
    return inside


def _regular_polygon(n_corners: int, first_angle: float, radius: float = 1.0) -> np.ndarray:
    """Corners [n, 2] of a regular polygon of `radius`, the first at `first_angle` (radians, y down)."""
    angles = first_angle + 2 * math.pi * np.arange(n_corners) / n_corners
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(n_points: int = 5, inner_radius: float = 0.45) -> np.ndarray:
    """Corners of a star pointing up: outer radius 1, alternating with `inner_radius`."""
    angles = -math.pi / 2 + math.pi * np.arange(2 * n_points) / n_points
    radii = np.where(np.arange(2 * n_points) % 2 == 0, 1.0, inner_radius)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


# Polygons in unit coordinates (radius 1 around the centre, y down). Triangle and star point up; the
# triangle is moved down a little so its visual centre sits at the object's centre.
_POLYGONS: dict[str, np.ndarray] = {
    "triangle": _regular_polygon(3, -math.pi / 2) + np.array([0.0, 0.15]),
    "star": _star(),
    "hexagon": _regular_polygon(6, 0.0),
}


def shape_mask(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of unit-coordinate points (x, y) (object radius 1, centred at 0) inside `shape`."""
    if shape == "circle":
        return x * x + y * y <= 1.0
    if shape == "square":
        return (np.abs(x) <= 0.85) & (np.abs(y) <= 0.85)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 1.05
    if shape == "cross":
        arm, half_length = 0.32, 0.95
        return ((np.abs(x) <= arm) & (np.abs(y) <= half_length)) | ((np.abs(y) <= arm) & (np.abs(x) <= half_length))
    if shape in _POLYGONS:
        return _inside_polygon(x, y, _POLYGONS[shape])
    raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: Scene, size: int, supersample: int = 4) -> torch.Tensor:
    """Draw `scene` as a float tensor [3, size, size] in [0, 1], antialiased.

    The scene is drawn at `supersample` times the size and averaged down, so edges are smooth.
    """
    fine = size * supersample
    centres = (np.arange(fine, dtype=np.float32) + 0.5) / fine  # pixel centres as fractions of the side
    y, x = np.meshgrid(centres, centres, indexing="ij")
    canvas = np.empty((3, fine, fine), dtype=np.float32)
    canvas[:] = np.array(BACKGROUNDS[scene.background], dtype=np.float32)[:, None, None] / 255.0
    for obj in scene.objects:
        cx, cy = obj.centre
        mask = shape_mask(obj.shape, (x - cx) / obj.radius, (y - cy) / obj.radius)
        canvas[:, mask] = np.array(COLOURS[obj.colour], dtype=np.float32)[:, None] / 255.0
    image = canvas.reshape(3, size, supersample, size, supersample).mean(axis=(2, 4))
    return torch.from_numpy(np.ascontiguousarray(image))


def make_batch(n: int, seed: int, size: int, p_two_objects: float = 0.5
               ) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """`n` random scenes from `seed`: (images [n, 3, size, size] in [0, 1], captions, scenes)."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, p_two_objects=p_two_objects) for _ in range(n)]
    captions = [caption(scene, rng) for scene in scenes]
    images = torch.stack([render_scene(scene, size) for scene in scenes])
    return images, captions, scenes
