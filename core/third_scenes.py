"""A third scene renderer, written apart from core/scenes.py (the guide's world) and core/other_scenes.py (the
classifier's): the world of `scenes-judge-3`, the judge that chooses defaults without sharing the guide's
drawings.

It draws a `core.scenes.Scene` (so captions, twins and training targets are the guide's) its own way:
- every shape is a signed distance field evaluated at the pixel centres, its edge anti-aliased by a
  one-pixel ramp of the distance (no supersampling);
- shapes have their own geometry, drawn per image: rounded squares, ellipses, stars with 0.38-0.55 inner
  radius, crosses with 0.22-0.36 arms, diamonds 0.65-0.95 wide, small rotations;
- a colour is a shade drawn around its own hue (`HUES`), filled flat, in a gradient or with a dark rim;
- backgrounds keep their name's brightness but get a faint tint and smooth noise or a gradient;
- centres move by up to 0.03 of the side and radii by 10 %, after the scene placed them.

    rng = numpy.random.default_rng(0)
    image = render(scenes.sample_scene(rng), 48, rng)     # float tensor [3, 48, 48] in [0, 1]

Randomness comes from the `rng` passed in, so a fixed seed gives the same images.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np
import torch

from core.scenes import Scene, SceneObject

# Hue (degrees) of each colour name, and how far a shade strays from it.
HUES: dict[str, float] = {"red": 356.0, "orange": 27.0, "yellow": 54.0, "green": 125.0, "cyan": 183.0,
                          "blue": 226.0, "purple": 282.0, "pink": 322.0}
HUE_SPREAD = 7.0
# Brightness range of each background name.
BACKGROUND_VALUES: dict[str, tuple[float, float]] = {"black": (0.0, 0.15), "gray": (0.38, 0.62),
                                                     "white": (0.85, 1.0)}
CENTRE_SHIFT = 0.03
RADIUS_SCALE = (0.9, 1.1)


def _segment_distance(x: np.ndarray, y: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance of points (x, y) to the segment from `start` to `end`."""
    along = end - start
    t = np.clip(((x - start[0]) * along[0] + (y - start[1]) * along[1]) / float(along @ along), 0.0, 1.0)
    return np.hypot(x - start[0] - t * along[0], y - start[1] - t * along[1])


def polygon_distance(x: np.ndarray, y: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Signed distance of points (x, y) to the polygon `corners` [n, 2]: negative inside."""
    distance = np.min([_segment_distance(x, y, corners[i - 1], corners[i]) for i in range(len(corners))], axis=0)
    inside = np.zeros(x.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(corners, np.roll(corners, 1, axis=0)):
        if y1 != y2:  # winding by crossings of a ray to the right
            inside ^= ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / (y2 - y1) + x1)
    return np.where(inside, -distance, distance)


def _turned(corners: np.ndarray, degrees: float) -> np.ndarray:
    turn = math.radians(degrees)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    return corners @ rotation.T


def _around(radii: np.ndarray, first_angle: float) -> np.ndarray:
    angles = first_angle + 2 * math.pi * np.arange(len(radii)) / len(radii)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def corners(shape: str, rng: np.random.Generator) -> np.ndarray:
    """A polygon of `shape` in unit coordinates (radius about 1, y down), with this image's own geometry."""
    if shape == "triangle":
        return _turned(_around(np.ones(3), -math.pi / 2) + [0.0, rng.uniform(0.1, 0.2)], rng.uniform(-12, 12))
    if shape == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.55))
        return _turned(_around(radii, -math.pi / 2), rng.uniform(-12, 12))
    if shape == "cross":
        arm, reach = rng.uniform(0.22, 0.36), rng.uniform(0.9, 1.0)
        arms = [np.array([[arm, -reach], [arm, -arm], [reach, -arm]])]  # from the top arm to the right one
        for _ in range(3):
            arms.append(_turned(arms[-1], 90.0))
        return _turned(np.concatenate(arms), rng.uniform(-10, 10))
    if shape == "diamond":
        width = rng.uniform(0.65, 0.95)
        return _turned(np.array([[0.0, -1.0], [width, 0.0], [0.0, 1.0], [-width, 0.0]]), rng.uniform(-8, 8))
    if shape == "hexagon":
        return _around(np.ones(6), math.radians(rng.uniform(0, 60)))
    raise ValueError(f"no polygon for {shape!r}")


def shape_distance(shape: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signed distance (unit coordinates, negative inside) of points (x, y) to one drawing of `shape`."""
    if shape == "circle":  # an ellipse, a little squashed; its distance approximated by the scaled radius
        squash = rng.uniform(0.88, 1.12)
        return (np.hypot(x * squash, y / squash) - 1.0) * min(squash, 1 / squash)
    if shape == "square":  # a rounded box, turned a little
        half, rounding = rng.uniform(0.78, 0.9), rng.uniform(0.0, 0.2)
        turned = _turned(np.stack([x.ravel(), y.ravel()], axis=1), rng.uniform(-15, 15))
        q = np.abs(turned) - (half - rounding)
        outside = np.hypot(np.maximum(q[:, 0], 0), np.maximum(q[:, 1], 0))
        return (outside + np.minimum(np.maximum(q[:, 0], q[:, 1]), 0) - rounding).reshape(x.shape)
    return polygon_distance(x, y, corners(shape, rng))


def shade(colour: str, rng: np.random.Generator) -> np.ndarray:
    """An RGB shade [3] of a colour name."""
    hue = (HUES[colour] + rng.uniform(-HUE_SPREAD, HUE_SPREAD)) % 360
    low = 0.85 if colour in ("yellow", "orange") else 0.72
    return np.array(colorsys.hsv_to_rgb(hue / 360, rng.uniform(0.7, 1.0), rng.uniform(low, 1.0)), dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Noise [size, size] with unit spread, smooth over a quarter to an eighth of the side."""
    cells = int(rng.integers(4, 9))
    coarse = torch.from_numpy(rng.standard_normal((1, 1, cells, cells)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return smooth[0, 0].numpy()


def background(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """The named background [3, size, size]: its brightness, a faint tint, smooth noise or a gradient."""
    value = rng.uniform(*BACKGROUND_VALUES[name])
    tint = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.08), 1.0), dtype=np.float32)
    canvas = np.ones((3, size, size), dtype=np.float32) * value * tint[:, None, None]
    if rng.random() < 0.5:
        canvas += rng.uniform(0.0, 0.05) * _smooth_noise(rng, size)[None]
    else:
        ramp = np.linspace(-1, 1, size, dtype=np.float32)
        canvas += rng.uniform(-0.06, 0.06) * (ramp[:, None] if rng.random() < 0.5 else ramp[None, :])[None]
    return np.clip(canvas, 0, 1)


def _paint(obj: SceneObject, canvas: np.ndarray, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
    """Draw one object onto `canvas` [3, H, W] in place."""
    size = canvas.shape[-1]
    cx, cy = (c + rng.uniform(-CENTRE_SHIFT, CENTRE_SHIFT) for c in obj.centre)
    radius = obj.radius * rng.uniform(*RADIUS_SCALE)
    distance = shape_distance(obj.shape, (x - cx) / radius, (y - cy) / radius, rng) * radius * size  # pixels
    cover = np.clip(0.5 - distance, 0.0, 1.0)
    fill = shade(obj.colour, rng)[:, None, None] * np.ones_like(canvas)
    style = rng.random()
    if style < 0.25:  # a light-to-dark gradient across the object
        fill = fill * (1 + rng.uniform(0.08, 0.18) * (cy - y) / radius)[None]
    elif style < 0.5:  # a dark rim a pixel wide
        fill = np.where((distance > -1.2)[None], fill * 0.6, fill)
    canvas[:] = canvas * (1 - cover) + np.clip(fill, 0, 1) * cover


def render(scene: Scene, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Draw `scene` as a float tensor [3, size, size] in [0, 1], objects in order (the last on top)."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(centres, centres, indexing="ij")
    canvas = background(scene.background, size, rng)
    for obj in scene.objects:
        _paint(obj, canvas, x, y, rng)
    return torch.from_numpy(np.ascontiguousarray(canvas, dtype=np.float32))
