"""A second scene renderer, written apart from core/scenes.py: the world the classifier judge learns from.

It speaks the same vocabulary (the colour, shape, position and relation *names* of core.scenes) but draws
everything its own way, so that a judge trained here does not share the guide's drawn world:
- shapes are PIL polygons (circles: PIL ellipses) drawn 6x larger and box-filtered down, with their own
  geometry (star inner radius, cross arm width, diamond width and triangle offset vary) and a little
  rotation and squash;
- sizes are a continuous range, centres are jittered over a region, not around a point;
- a colour is a shade: hue, saturation and value drawn around the colour's name (HUES), the fill may be
  shaded or grainy;
- backgrounds are greys or faint tints, plain, in gradients, with grain and cloudy textures.

    rng = numpy.random.default_rng(0)
    scene = sample_scene(rng)              # OtherScene(objects=(DrawnObject(...),), background=Background(...))
    image = render(scene, 48)              # float tensor [3, 48, 48] in [0, 1]
    images, scenes = make_batch(16, seed=0, size=48)

Coordinates are fractions of the image side, x to the right, y downwards. Everything random is drawn when a
scene is sampled (the texture of a background is a stored seed), so `render` is a pure function of the scene.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.scenes import COLOURS, POSITIONS, RELATIONS, SHAPES

# Hue (degrees) of each colour name and how far a shade may stray from it; then the ranges of saturation
# and value. Orange and yellow need light shades (dark ones read as brown and olive).
HUES: dict[str, tuple[float, float]] = {
    "red": (0.0, 8.0), "orange": (28.0, 6.0), "yellow": (52.0, 6.0), "green": (122.0, 20.0),
    "cyan": (185.0, 9.0), "blue": (228.0, 10.0), "purple": (276.0, 10.0), "pink": (318.0, 10.0),
}
SATURATION: dict[str, tuple[float, float]] = {name: (0.65, 1.0) for name in HUES} | {
    "orange": (0.8, 1.0), "purple": (0.6, 0.9), "pink": (0.55, 0.9)}
VALUE: dict[str, tuple[float, float]] = {name: (0.7, 1.0) for name in HUES} | {
    "yellow": (0.82, 1.0), "orange": (0.82, 1.0), "green": (0.55, 0.95), "purple": (0.6, 0.9),
    "pink": (0.8, 1.0)}

# Where a position's centres fall: (x, y) of the region's middle and the half-widths of the region.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.25, 0.5, 0.08, 0.09),
    "right": (0.75, 0.5, 0.08, 0.09),
    "top": (0.5, 0.25, 0.09, 0.08),
    "bottom": (0.5, 0.75, 0.09, 0.08),
    "center": (0.5, 0.5, 0.05, 0.05),
}
RADIUS = (0.09, 0.24)  # half an object's width, as a fraction of the side
TWO_OBJECT_RADIUS = (0.09, 0.2)
SUPERSAMPLE = 6
# Outlines without a name in the vocabulary: clutter and distractors for training the judge.
UNNAMED_OUTLINES = ("blob", "streak")


@dataclasses.dataclass(frozen=True)
class DrawnObject:
    """One object: its names (`shape` may be an unnamed outline, `position` None off the regions) and drawing.

    `outline` holds the polygon in unit coordinates (rotation and squash applied), or () for an ellipse
    with half-axes `ellipse`; `fill` is RGB in [0, 1], `shading` a value slope across the object and
    `grain` the standard deviation of its fill noise.
    """

    colour: str
    shape: str
    position: str | None
    centre: tuple[float, float]
    radius: float
    fill: tuple[float, float, float]
    outline: tuple[tuple[float, float], ...] = ()
    ellipse: tuple[float, float] = (1.0, 1.0)
    shading: tuple[float, float] = (0.0, 0.0)
    grain: float = 0.0
    grain_seed: int = 0


@dataclasses.dataclass(frozen=True)
class Background:
    """Two colours blended by `kind` (flat, linear, radial), plus pixel grain and a cloudy texture."""

    kind: str
    first: tuple[float, float, float]
    second: tuple[float, float, float]
    angle: float = 0.0
    grain: float = 0.0
    grain_colour: float = 0.0
    clouds: float = 0.0
    cloud_colour: float = 0.0
    texture_seed: int = 0


@dataclasses.dataclass(frozen=True)
class OtherScene:
    """Objects on a background; with two named objects, `relation` says how the first stands to the second."""

    objects: tuple[DrawnObject, ...]
    background: Background
    relation: str | None = None


# ----------------------------------------------------------------------------------------------- sampling


def shade(colour: str, rng: np.random.Generator) -> tuple[float, float, float]:
    """A random RGB shade in [0, 1] of a colour name (hue, saturation and value jittered within its range)."""
    centre, spread = HUES[colour]
    hue = (centre + rng.uniform(-spread, spread)) % 360.0
    rgb = colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(*SATURATION[colour]), rng.uniform(*VALUE[colour]))
    return tuple(float(channel) for channel in rgb)


def _grey_or_tint(rng: np.random.Generator) -> tuple[float, float, float]:
    """A background colour: a grey, or (a third of the time) a faint tint of any hue."""
    saturation = rng.uniform(0.04, 0.18) if rng.random() < 0.33 else 0.0
    return tuple(float(c) for c in colorsys.hsv_to_rgb(rng.random(), saturation, rng.uniform(0.02, 0.98)))


def sample_background(rng: np.random.Generator) -> Background:
    """A random background: plain, linear or radial gradient, sometimes grainy or cloudy."""
    kind = str(rng.choice(["flat", "flat", "linear", "radial"]))
    first = _grey_or_tint(rng)
    second = _grey_or_tint(rng) if kind != "flat" else first
    grainy, cloudy = rng.random() < 0.4, rng.random() < 0.35
    return Background(kind, first, second, angle=float(rng.uniform(0, 2 * math.pi)),
                      grain=float(rng.uniform(0.01, 0.1)) if grainy else 0.0,
                      grain_colour=float(rng.uniform(0, 0.06)) if grainy else 0.0,
                      clouds=float(rng.uniform(0.03, 0.15)) if cloudy else 0.0,
                      cloud_colour=float(rng.uniform(0, 0.08)) if cloudy else 0.0,
                      texture_seed=int(rng.integers(2**31)))


def _rotated(points: np.ndarray, degrees: float, squash: float = 1.0) -> tuple[tuple[float, float], ...]:
    """Points [n, 2] squashed (x times `squash`, y divided by it) then rotated, as a tuple of pairs."""
    turn = math.radians(degrees)
    x, y = points[:, 0] * squash, points[:, 1] / squash
    cos, sin = math.cos(turn), math.sin(turn)
    return tuple((float(a), float(b)) for a, b in zip(cos * x - sin * y, sin * x + cos * y))


def _ring(radii: np.ndarray, start: float) -> np.ndarray:
    """Points at `radii` around the centre, evenly spaced in angle from `start` (radians, y down)."""
    angles = start + 2 * math.pi * np.arange(len(radii)) / len(radii)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def outline(shape: str, rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    """The polygon of a shape (or unnamed outline) in unit coordinates, with its own random geometry.

    The circle has no polygon (it is drawn as an ellipse): returns ().
    """
    if shape == "circle":
        return ()
    if shape == "square":
        half = rng.uniform(0.78, 0.9)
        corners = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        return _rotated(corners, rng.uniform(-12, 12), rng.uniform(0.92, 1.08))
    if shape == "diamond":
        width = rng.uniform(0.7, 1.0)
        return _rotated(np.array([[0, -1.0], [width, 0], [0, 1.0], [-width, 0]]), rng.uniform(-8, 8))
    if shape == "triangle":
        corners = _ring(np.ones(3), -math.pi / 2) + np.array([0.0, rng.uniform(0.1, 0.25)])
        return _rotated(corners, rng.uniform(-10, 10), rng.uniform(0.9, 1.15))
    if shape == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.36, 0.52))
        return _rotated(_ring(radii, -math.pi / 2), rng.uniform(-12, 12))
    if shape == "cross":
        arm, reach = rng.uniform(0.22, 0.36), rng.uniform(0.9, 1.0)
        plus = [(arm, -reach), (arm, -arm), (reach, -arm), (reach, arm), (arm, arm), (arm, reach),
                (-arm, reach), (-arm, arm), (-reach, arm), (-reach, -arm), (-arm, -arm), (-arm, -reach)]
        return _rotated(np.array(plus), rng.uniform(-8, 8))
    if shape == "hexagon":
        return _rotated(_ring(np.ones(6), 0.0), rng.uniform(0, 60), rng.uniform(0.93, 1.07))
    if shape == "blob":  # a lumpy closed curve: a few random harmonics of the radius
        angles = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        radii = np.ones_like(angles)
        for harmonic in range(1, 5):
            radii += rng.uniform(0.1, 0.3) * np.cos(harmonic * angles + rng.uniform(0, 2 * math.pi))
        return _rotated(_ring(np.clip(radii, 0.25, None), 0.0), 0.0, rng.uniform(0.7, 1.4))
    if shape == "streak":  # an elongated ellipse at any angle
        return _rotated(_ring(np.ones(32), 0.0), rng.uniform(0, 180), rng.uniform(1.8, 2.8))
    raise ValueError(f"unknown shape {shape!r}")


def place(rng: np.random.Generator, colour: str, shape: str, position: str,
          radius_range: tuple[float, float] = RADIUS) -> DrawnObject:
    """An object of a colour and shape at a random spot of the position's region, fully inside the image."""
    radius = float(rng.uniform(*radius_range))
    x, y, spread_x, spread_y = REGIONS[position]
    centre = tuple(float(np.clip(middle + rng.uniform(-spread, spread), radius + 0.01, 0.99 - radius))
                   for middle, spread in ((x, spread_x), (y, spread_y)))
    return drawn_object(rng, colour, shape, position, centre, radius)


def drawn_object(rng: np.random.Generator, colour: str, shape: str, position: str | None,
                 centre: tuple[float, float], radius: float) -> DrawnObject:
    """An object at an exact centre, its shade, outline and fill texture drawn with `rng`."""
    squash = rng.uniform(0.94, 1.06)
    texture = rng.random()
    return DrawnObject(colour, shape, position, centre, radius, shade(colour, rng), outline(shape, rng),
                       ellipse=(squash, 1 / squash),
                       shading=tuple(float(s) for s in rng.uniform(-0.12, 0.12, 2)) if texture < 0.3 else (0.0, 0.0),
                       grain=float(rng.uniform(0.02, 0.07)) if texture > 0.8 else 0.0,
                       grain_seed=int(rng.integers(2**31)))


def sample_scene(rng: np.random.Generator, n_objects: int | None = None) -> OtherScene:
    """A random scene of one object, or (half the time unless `n_objects`) two objects in a relation.

    Two objects sit in opposite halves (as their relation says) with different colours, each kept inside
    its half, so the relation caption says exactly which is where.
    """
    n_objects = n_objects or (2 if rng.random() < 0.5 else 1)
    background = sample_background(rng)
    if n_objects == 1:
        only = place(rng, _pick(rng, COLOURS), _pick(rng, SHAPES), _pick(rng, POSITIONS))
        return OtherScene((only,), background)
    relation = _pick(rng, RELATIONS)
    colours = [str(c) for c in rng.choice(list(COLOURS), size=2, replace=False)]
    objects = tuple(in_half(rng, colour, _pick(rng, SHAPES), position)
                    for colour, position in zip(colours, RELATIONS[relation]))
    return OtherScene(objects, background, relation)


def in_half(rng: np.random.Generator, colour: str, shape: str, position: str) -> DrawnObject:
    """An object in the half of the image named by `position`, crossing the middle line by at most 0.02."""
    obj = place(rng, colour, shape, position, TWO_OBJECT_RADIUS)
    axis = 0 if position in ("left", "right") else 1
    centre = list(obj.centre)
    if position in ("left", "top"):
        centre[axis] = min(centre[axis], 0.52 - obj.radius)
    else:
        centre[axis] = max(centre[axis], 0.48 + obj.radius)
    return dataclasses.replace(obj, centre=(centre[0], centre[1]))


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


# ----------------------------------------------------------------------------------------------- drawing


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y [size, size] of pixel centres, as fractions of the side."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return x, y


def _cloud_texture(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """Smooth noise [channels, size, size] around 0 (a coarse random grid, bicubically enlarged)."""
    cells = int(rng.integers(3, 9))
    coarse = rng.normal(0, 1, (channels, cells, cells)).astype(np.float32)
    layers = [np.asarray(Image.fromarray(layer, mode="F").resize((size, size), Image.BICUBIC)) for layer in coarse]
    return np.stack(layers)


def paint_background(background: Background, size: int) -> np.ndarray:
    """The background as float32 [3, size, size], clipped to [0, 1]."""
    x, y = _grid(size)
    first = np.array(background.first, dtype=np.float32)[:, None, None]
    second = np.array(background.second, dtype=np.float32)[:, None, None]
    if background.kind == "linear":
        along = (x - 0.5) * math.cos(background.angle) + (y - 0.5) * math.sin(background.angle)
        blend = np.clip(along / 1.42 + 0.5, 0, 1)
    elif background.kind == "radial":
        blend = np.clip(np.hypot(x - 0.5, y - 0.5) / 0.71, 0, 1)
    else:
        blend = np.zeros_like(x)
    canvas = first * (1 - blend) + second * blend
    rng = np.random.default_rng(background.texture_seed)
    if background.grain:
        canvas = canvas + background.grain * rng.normal(size=(1, size, size))
        canvas = canvas + background.grain_colour * rng.normal(size=(3, size, size))
    if background.clouds:
        canvas = canvas + background.clouds * _cloud_texture(rng, size, 1)
        canvas = canvas + background.cloud_colour * _cloud_texture(rng, size, 3)
    return np.clip(canvas, 0, 1).astype(np.float32)


def coverage(obj: DrawnObject, size: int) -> np.ndarray:
    """How much of each pixel [size, size] the object covers, in [0, 1] (drawn 6x larger, box-averaged)."""
    fine = size * SUPERSAMPLE
    mask = Image.new("L", (fine, fine), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = obj.centre[0] * fine, obj.centre[1] * fine
    scale = obj.radius * fine
    if obj.outline:
        draw.polygon([(cx + scale * u, cy + scale * v) for u, v in obj.outline], fill=255)
    else:
        rx, ry = scale * obj.ellipse[0], scale * obj.ellipse[1]
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return np.asarray(mask.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0


def _paint(obj: DrawnObject, size: int) -> np.ndarray:
    """The object's fill [3, size, size]: its shade, a value slope across it and grain."""
    x, y = _grid(size)
    fill = np.array(obj.fill, dtype=np.float32)[:, None, None]
    slope_x, slope_y = obj.shading
    brightness = 1 + (slope_x * (x - obj.centre[0]) + slope_y * (y - obj.centre[1])) / max(obj.radius, 1e-3)
    fill = fill * brightness[None]
    if obj.grain:
        fill = fill + obj.grain * np.random.default_rng(obj.grain_seed).normal(size=(3, size, size))
    return np.clip(fill, 0, 1).astype(np.float32)


def render(scene: OtherScene, size: int) -> torch.Tensor:
    """Draw a scene as float32 [3, size, size] in [0, 1]; objects later in the list are drawn on top."""
    canvas = paint_background(scene.background, size)
    for obj in scene.objects:
        alpha = coverage(obj, size)[None]
        canvas = canvas * (1 - alpha) + _paint(obj, size) * alpha
    return torch.from_numpy(np.ascontiguousarray(canvas))


def make_batch(n: int, seed: int, size: int, n_objects: int | None = None) -> tuple[torch.Tensor, list[OtherScene]]:
    """`n` random scenes from `seed`: (images [n, 3, size, size] in [0, 1], scenes)."""
    rng = np.random.default_rng(seed)
    drawn = [sample_scene(rng, n_objects) for _ in range(n)]
    return torch.stack([render(scene, size) for scene in drawn]), drawn
