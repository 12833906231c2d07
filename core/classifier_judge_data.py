"""Training examples for the classifier judge: second-renderer scenes with a target distribution per head.

Each example is an image (rendered at a random size, resized to the judge's resolution) and, for each head
of core.classifier_judge (colour, shape, position and the joint colour_shape and colour_position, each
with "none"), the probabilities the judge should give: `targets` mixes the things in the image (`Part`s). The kinds of example, and why:
- one:      one named object (sometimes among tiny specks of other colours); its names, certain;
- pair:     two different objects (a relation scene, or two anywhere), whole: each head's mass shared by
            the objects in proportion to their areas, so an image showing two things is not sure of either,
            while the joint heads say which colour has which shape and where;
- twin:     the same object twice in two places: colour and shape sure, position split between the two;
- half:     a two-object scene with one half painted over (as the judge looks at relation prompts): the
            object left in the half, certain;
- cut:      a one-object scene with a half painted over: the object if it is in the kept half, else none;
- clutter:  lumps and streaks of several colours anywhere: colour and position in proportion to the area
            of each lump, shape spread over all shapes (a lump is no shape), and "none" for the share by
            which the lumps fall short of an object's area;
- empty:    no object (a background, grain, pixel noise, smoothed colour noise, a flat or graded colour,
            a few specks): none, certain. This is what keeps noise and blank images from scoring.
Then augmentations (applied to every kind): small shifts and zooms, blur, pixel noise, brightness and
contrast, and colour quantisation, so that rough generated images look familiar.

    images, targets = training_batch(np.random.default_rng(0), 128, resolution=48)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from core import other_scenes as drawing
from core.classifier_judge import HEADS, keep_half, resize
from core.scenes import COLOURS, POSITIONS, RELATIONS, SHAPES

KINDS = {"one": 0.38, "pair": 0.07, "twin": 0.04, "half": 0.16, "cut": 0.05, "clutter": 0.12, "empty": 0.18}
OBJECT_AREA = 0.03  # a lump area (fraction of the image) from which clutter counts fully as an object
POSITION_SPREAD = 0.12  # how far (fraction of the side) a lump's position label spreads to nearby regions


@dataclasses.dataclass
class Part:
    """One thing in an image and its share of the judge's belief: distributions over the named colours,
    shapes and positions (no "none"; that is the share left to nothing, see `targets`)."""

    weight: float
    colour: np.ndarray
    shape: np.ndarray
    position: np.ndarray


def _one_hot(values, value: str) -> np.ndarray:
    vector = np.zeros(len(values), dtype=np.float32)
    vector[list(values).index(value)] = 1.0
    return vector


def object_part(colour: str, shape: str, position: str, weight: float = 1.0) -> Part:
    """A thing whose names are certain."""
    return Part(weight, _one_hot(COLOURS, colour), _one_hot(SHAPES, shape), _one_hot(POSITIONS, position))


def targets(parts: list[Part], nothing: float = 0.0) -> dict[str, np.ndarray]:
    """What each head should say about an image of `parts`, with the share `nothing` on "none"; the joint
    heads pair each part's colour with its own shape and position, never with another part's."""
    total = sum(part.weight for part in parts) + nothing
    mixed = {head: np.zeros(len(classes) - 1, dtype=np.float32) for head, classes in HEADS.items()}
    for part in parts:
        mixed["colour"] += part.weight * part.colour
        mixed["shape"] += part.weight * part.shape
        mixed["position"] += part.weight * part.position
        mixed["colour_shape"] += part.weight * np.outer(part.colour, part.shape).ravel()
        mixed["colour_position"] += part.weight * np.outer(part.colour, part.position).ravel()
    return {head: np.append(values, nothing).astype(np.float32) / total for head, values in mixed.items()}


def object_targets(colour: str, shape: str, position: str) -> dict[str, np.ndarray]:
    return targets([object_part(colour, shape, position)])


def empty_targets() -> dict[str, np.ndarray]:
    return targets([], nothing=1.0)


def _specks(rng: np.random.Generator, count: int) -> list[drawing.DrawnObject]:
    """Tiny dots and lumps of any colour anywhere (too small to be an object)."""
    return [drawing.drawn_object(rng, _pick(rng, COLOURS), _pick(rng, ["circle", "blob"]), None,
                                 tuple(rng.uniform(0.05, 0.95, 2)), float(rng.uniform(0.012, 0.035)))
            for _ in range(count)]


def soft_position(x: float, y: float) -> np.ndarray:
    """A position distribution spread over the regions near (x, y) (Gaussian weights by distance to each middle)."""
    weights = np.array([math.exp(-((x - rx) ** 2 + (y - ry) ** 2) / (2 * POSITION_SPREAD ** 2))
                        for rx, ry, _, _ in (drawing.REGIONS[p] for p in POSITIONS)], dtype=np.float32)
    return weights / weights.sum()


def _one(rng, size):
    scene = drawing.sample_scene(rng, 1)
    obj = scene.objects[0]
    if rng.random() < 0.3:
        scene = drawing.OtherScene(tuple(_specks(rng, int(rng.integers(1, 6)))) + scene.objects, scene.background)
    return drawing.render(scene, size), object_targets(obj.colour, obj.shape, obj.position)


def _pair(rng, size):
    """Two different objects: a relation scene, or (half the time) two smaller ones at any two positions."""
    if rng.random() < 0.5:
        scene = drawing.sample_scene(rng, 2)
    else:
        colours = [str(c) for c in rng.choice(list(COLOURS), size=2, replace=False)]
        positions = [str(p) for p in rng.choice(list(POSITIONS), size=2, replace=False)]
        objects = tuple(drawing.place(rng, colour, _pick(rng, SHAPES), position, (0.09, 0.16))
                        for colour, position in zip(colours, positions))
        scene = drawing.OtherScene(objects, drawing.sample_background(rng))
    weights = _visible_areas(scene.objects, size)
    parts = [object_part(o.colour, o.shape, o.position, weight) for o, weight in zip(scene.objects, weights)]
    return drawing.render(scene, size), targets(parts)


def _twin(rng, size):
    colour, shape = _pick(rng, COLOURS), _pick(rng, SHAPES)
    positions = [str(p) for p in rng.choice(list(POSITIONS), size=2, replace=False)]
    radius = float(rng.uniform(0.09, 0.17))
    objects = tuple(drawing.place(rng, colour, shape, p, (radius, radius)) for p in positions)
    scene = drawing.OtherScene(objects, drawing.sample_background(rng))
    return drawing.render(scene, size), targets([object_part(colour, shape, p) for p in positions])


def _half(rng, size):
    scene = drawing.sample_scene(rng, 2)
    kept = scene.objects[int(rng.integers(2))]
    image = keep_half(drawing.render(scene, size)[None], kept.position)[0]
    return image, object_targets(kept.colour, kept.shape, kept.position)


def _cut(rng, size):
    position = _pick(rng, [p for p in POSITIONS if p != "center"])
    obj = drawing.in_half(rng, _pick(rng, COLOURS), _pick(rng, SHAPES), position)
    scene = drawing.OtherScene((obj,), drawing.sample_background(rng))
    opposite = {first: second for first, second in RELATIONS.values()}[position]
    half = position if rng.random() < 0.5 else opposite
    image = keep_half(drawing.render(scene, size)[None], half)[0]
    return image, (object_targets(obj.colour, obj.shape, position) if half == position else empty_targets())


def _clutter(rng, size):
    colours = [_pick(rng, COLOURS) for _ in range(int(rng.integers(1, 4)))]
    lumps = []
    for _ in range(int(rng.integers(2, 7))):
        outline = _pick(rng, ["blob", "blob", "streak"])
        radius = float(rng.uniform(0.03, 0.16))
        lumps.append(drawing.drawn_object(rng, _pick(rng, colours), outline, None,
                                          tuple(rng.uniform(0.08, 0.92, 2)), radius))
    image = drawing.render(drawing.OtherScene(tuple(lumps), drawing.sample_background(rng)), size)
    areas = _visible_areas(lumps, size)
    no_shape = np.full(len(SHAPES), 1.0 / len(SHAPES), dtype=np.float32)  # a lump is no shape in particular
    parts = [Part(area, _one_hot(COLOURS, lump.colour), no_shape, soft_position(*lump.centre))
             for lump, area in zip(lumps, areas)]
    nothing = max(0.0, OBJECT_AREA - float(sum(areas)))  # too little coloured area to be an object
    return image, targets(parts, nothing)


def _visible_areas(objects, size: int) -> list[float]:
    """The fraction of the image each object covers where no later object covers it."""
    covered = np.zeros((size, size), dtype=np.float32)
    areas = []
    for obj in reversed(objects):  # later objects are drawn on top
        alpha = drawing.coverage(obj, size) * (1 - covered)
        areas.append(float(alpha.mean()))
        covered = covered + alpha
    return areas[::-1]


def _empty(rng, size):
    kind = _pick(rng, ["background", "uniform noise", "grey noise", "smooth colour noise", "flat colour", "specks"])
    if kind == "background":
        return drawing.render(drawing.OtherScene((), drawing.sample_background(rng)), size), empty_targets()
    if kind == "specks":
        scene = drawing.OtherScene(tuple(_specks(rng, int(rng.integers(1, 5)))), drawing.sample_background(rng))
        return drawing.render(scene, size), empty_targets()
    base = torch.tensor(rng.uniform(0, 1, 3), dtype=torch.float32)[:, None, None]
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    if kind == "uniform noise":  # like the random start of a render, sometimes faded toward a grey
        amount = float(rng.uniform(0.2, 1.0))
        image = base.mean() * (1 - amount) + amount * torch.rand(3, size, size, generator=generator)
    elif kind == "grey noise":
        image = base.mean() + float(rng.uniform(0.03, 0.3)) * torch.randn(3, size, size, generator=generator)
    elif kind == "smooth colour noise":
        noise = torch.randn(1, 3, size, size, generator=generator)
        blur = int(rng.integers(2, 5)) * 2 + 1
        noise = torch.nn.functional.avg_pool2d(noise, blur, 1, blur // 2, count_include_pad=False)[0]
        image = base.mean() + float(rng.uniform(0.2, 1.2)) * noise
    else:  # one colour, sometimes graded: a uniform image is not an object
        x = torch.linspace(0, 1, size)
        ramp = x[None, :] if rng.random() < 0.5 else x[:, None]
        other = torch.tensor(rng.uniform(0, 1, 3), dtype=torch.float32)[:, None, None]
        image = base + (other - base) * ramp * float(rng.random() < 0.4)
    return image.expand(3, size, size).clamp(0, 1), empty_targets()


MAKERS = {"one": _one, "pair": _pair, "twin": _twin, "half": _half, "cut": _cut, "clutter": _clutter, "empty": _empty}


def example(rng: np.random.Generator, kind: str, resolution: int) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """One example of `kind`, drawn at a random size (half the time the judge's own) and resized."""
    size = resolution if rng.random() < 0.5 else int(rng.integers(28, 2 * resolution + 1))
    image, targets = MAKERS[kind](rng, size)
    return resize(image[None], resolution)[0], targets


def training_batch(rng: np.random.Generator, count: int, resolution: int, augment: bool = True
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`count` examples of kinds drawn by KINDS' weights: (images [count, 3, R, R], targets per head)."""
    kinds = rng.choice(list(KINDS), size=count, p=np.array(list(KINDS.values())) / sum(KINDS.values()))
    pairs = [example(rng, str(kind), resolution) for kind in kinds]
    images = torch.stack([image for image, _ in pairs])
    targets = {head: torch.from_numpy(np.stack([t[head] for _, t in pairs])) for head in HEADS}
    return (augmentations(rng, images) if augment else images), targets


def augmentations(rng: np.random.Generator, images: torch.Tensor) -> torch.Tensor:
    """Per image, at random: a shift and zoom of a few pixels, blur, pixel noise, brightness and contrast,
    quantised colours. None changes what the image shows (colour hues and regions stay)."""
    count, _, side, _ = images.shape
    out = images.clone()
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for index in range(count):
        image = out[index:index + 1]
        if rng.random() < 0.5:
            zoom = rng.uniform(0.92, 1.08)
            shift = rng.uniform(-0.06, 0.06, 2)  # in grid units (2 = the whole side)
            theta = torch.tensor([[[zoom, 0, shift[0]], [0, zoom, shift[1]]]], dtype=torch.float32)
            grid = torch.nn.functional.affine_grid(theta, list(image.shape), align_corners=False)
            image = torch.nn.functional.grid_sample(image, grid, padding_mode="border", align_corners=False)
        if rng.random() < 0.25:
            image = _blur(image, float(rng.uniform(0.4, 1.2)))
        if rng.random() < 0.4:
            image = image + float(rng.uniform(0.01, 0.12)) * torch.randn(image.shape, generator=generator)
        if rng.random() < 0.4:
            mean = image.mean()
            image = (image - mean) * rng.uniform(0.85, 1.15) + mean * rng.uniform(0.9, 1.1)
        if rng.random() < 0.1:
            image = torch.round(image.clamp(0, 1) * 15) / 15
        out[index] = image[0].clamp(0, 1)
    return out


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of [1, 3, H, W] (separable, reflected edges)."""
    radius = max(1, int(math.ceil(2 * sigma)))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    taps = (taps / taps.sum()).repeat(3, 1)
    padded = torch.nn.functional.pad(image, (radius, radius, radius, radius), mode="reflect")
    image = torch.nn.functional.conv2d(padded, taps[:, None, None, :], groups=3)
    return torch.nn.functional.conv2d(image, taps[:, None, :, None], groups=3)


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]
