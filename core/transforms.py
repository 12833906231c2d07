"""View transforms: the augmented views of the pixels that CLIP is shown (CLIPig's `transforms`).

Every transform works on a whole batch `[B * n_views, 3, H, W]` at once, draws its random
parameters from a `torch.Generator` in one call (no Python loop over images), and is built from
twice-differentiable operations (`grid_sample`, `gather`, `interpolate`, `conv2d`), because the bake
differentiates through the renderer's own gradient steps.

Random parameters are drawn per view index: view `j` of every image in the batch gets the same
draw. The B images are different prompts rendered together, so this keeps a prompt's views (and so
its whole run) independent of which batch it is in, while the n_views views of one image differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.errors import UserError
from core.image_ops import (affine_sample, gather_windows, gaussian_blur, pixel_linear_to_theta, resize,
                            roll_images, rotation_matrices)
from core.registry import Configured, Param, Registry

TRANSFORMS = Registry(
    "transform",
    "Transforms (views)",
    """
    The `views` of a recipe: a chain of transforms applied to every view CLIP sees.
    The chain first repeats each image `cutn` times (the views of image `i` are rows
    `i*cutn ... i*cutn+cutn-1`), applies each active transform in order with fresh random
    parameters per view, then resizes the views to the CLIP input resolution if needed.
    Without a `views` list the default chain (`cutouts` with a little noise) is used.
    """,
)

# The default chain does not mirror (cutouts' own `flip` default of 0.5 does): a mirrored view turns "on
# the left" into "on the right", so prompts that say where things are would be aimed at both sides at once.
DEFAULT_VIEWS = [
    {"cutouts": {"scale": [0.5, 1.0], "whole": 0.125, "flip": 0.0, "degree": [-5, 5], "shear": [-3, 3],
                 "noise": 0.02}},
]

LUMINANCE = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ViewContext:
    """What a transform may need besides its parameters."""

    generator: torch.Generator
    base_size: int  # the smaller side of the images given to the chain; float sizes are multiples of it
    out_size: int  # the CLIP input resolution the chain ends at
    n_views: int  # views per image
    n_images: int  # images in the batch (rows = n_images * n_views)


# ---------------------------------------------------------------- helpers


def _per_view(context: ViewContext, draws: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Draws `[n_views, ...]` tiled to one per row `[n_images * n_views, ...]` (row i*n+j gets draw j)."""
    tiled = draws.repeat(context.n_images, *([1] * (draws.dim() - 1)))
    return tiled.to(device=like.device, dtype=like.dtype if tiled.is_floating_point() else tiled.dtype)


def _uniform(context: ViewContext, low: float, high: float, like: torch.Tensor, *shape: int) -> torch.Tensor:
    """Uniform numbers in [low, high], `[rows, *shape]`, drawn in one call on the generator's device."""
    generator = context.generator
    draws = torch.rand((context.n_views, *shape), generator=generator, device=generator.device)
    return _per_view(context, low + (high - low) * draws, like)


def _normal(context: ViewContext, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like `like` (`[rows, C, H, W]`), one field per view index."""
    generator = context.generator
    draws = torch.randn((context.n_views, *like.shape[1:]), generator=generator, device=generator.device)
    return _per_view(context, draws, like)


def _chance(context: ViewContext, probability: float, like: torch.Tensor) -> torch.Tensor:
    """`[rows]` booleans, each true with `probability`."""
    generator = context.generator
    draws = torch.rand(context.n_views, generator=generator, device=generator.device) < probability
    return _per_view(context, draws, like)


def _integers(context: ViewContext, high: int, like: torch.Tensor) -> torch.Tensor:
    """`[rows]` integers in [0, high)."""
    generator = context.generator
    draws = torch.randint(0, high, (context.n_views,), generator=generator, device=generator.device)
    return _per_view(context, draws, like)


def _pixels(size: int | float, context: ViewContext) -> int:
    """A size parameter in pixels: ints are pixels, floats multiples of the chain's input side."""
    if isinstance(size, int):
        return size
    return max(1, int(round(size * context.base_size)))


PADDING = Param(
    "padding", "reflection", "what is seen outside the image", kind="text",
    choices=("zeros", "border", "reflection"),
)


# ---------------------------------------------------------------- entries


@TRANSFORMS.register(
    Param("std", (0.1,), "standard deviation, one value or one per channel (R G B)", kind="floats",
          count=(1, 3), minimum=0),
)
def noise(images, values, context):
    """Add gaussian noise.

    Noise hides small pixel patterns from CLIP, so only features it is sure about grow.
    """
    std = images.new_tensor(values["std"]).view(1, -1, 1, 1)
    return images + _normal(context, images) * std


@TRANSFORMS.register(
    Param("shift", (0.0, 1.0), "range of the shift as a fraction of the side (drawn per axis)", kind="floats",
          count=(2,)),
)
def random_shift(images, values, context):
    """Shift each view by a random amount, wrapping around the edges.

    The wrap-around makes the result a seamless texture; shifts are whole pixels,
    `round(fraction * side)`, drawn separately for x and y.
    """
    _, _, height, width = images.shape
    low, high = values["shift"]
    fractions = _uniform(context, low, high, images, 2)
    shift_rows = torch.round(fractions[:, 0] * height).long()
    shift_cols = torch.round(fractions[:, 1] * width).long()
    return roll_images(images, shift_rows, shift_cols)


@TRANSFORMS.register(
    Param("degree", (-10.0, 10.0), "range of the rotation angle in degrees", kind="floats", count=(2,)),
    Param("center", (0.5, 0.5), "range of the rotation centre as a fraction of the image (drawn per axis)",
          kind="floats", count=(2,), minimum=0, maximum=1),
    PADDING,
)
def random_rotate(images, values, context):
    """Rotate each view by a random angle around a random centre (positive angles turn counter-clockwise).

    Rotation breaks the pixel grid that CLIP otherwise fills with high-frequency artefacts.
    """
    _, _, height, width = images.shape
    low, high = values["degree"]
    angles = _uniform(context, low, high, images)
    center_low, center_high = values["center"]
    centers = _uniform(context, center_low, center_high, images, 2) * 2 - 1
    linear = pixel_linear_to_theta(rotation_matrices(angles), height, width)
    # input = c + A (p - c): rotate about the centre c.
    translation = centers - (linear @ centers[:, :, None])[:, :, 0]
    theta = torch.cat([linear, translation[:, :, None]], dim=2)
    return affine_sample(images, theta, (height, width), values["padding"])


@TRANSFORMS.register(
    Param("scale", (0.9, 1.1), "range of the zoom; above 1 zooms in, below 1 shows more than the image",
          kind="floats", count=(2,), minimum=0.01),
    PADDING,
)
def random_scale(images, values, context):
    """Zoom each view by a random factor about the image centre."""
    count, _, height, width = images.shape
    low, high = values["scale"]
    scales = _uniform(context, low, high, images)
    theta = images.new_zeros(count, 2, 3)
    theta[:, 0, 0] = 1 / scales
    theta[:, 1, 1] = 1 / scales
    return affine_sample(images, theta, (height, width), values["padding"])


def _crop_side(name: str, values, context, height: int, width: int) -> int:
    """A crop's side in pixels; a crop larger than the image is the user's error."""
    size = _pixels(values["size"], context)
    if size > min(height, width):
        raise UserError(f"{name} size {size} px is larger than the image ({width}x{height} px)")
    return size


@TRANSFORMS.register(
    Param("size", 0.75, "side of the crop", kind="size"),
)
def random_crop(images, values, context):
    """Cut a square window of `size` from a random position of each view."""
    _, _, height, width = images.shape
    size = _crop_side("random_crop", values, context, height, width)
    tops = _integers(context, height - size + 1, images)
    lefts = _integers(context, width - size + 1, images)
    offsets = torch.arange(size, device=images.device)
    rows = tops[:, None] + offsets
    cols = lefts[:, None] + offsets
    return gather_windows(images, rows, cols)


@TRANSFORMS.register(
    Param("size", 1.0, "side of the crop", kind="size"),
)
def center_crop(images, values, context):
    """Cut a square window of `size` from the centre (e.g. one tile back after `repeat`)."""
    _, _, height, width = images.shape
    size = _crop_side("center_crop", values, context, height, width)
    top, left = (height - size) // 2, (width - size) // 2
    return images[:, :, top: top + size, left: left + size]


@TRANSFORMS.register(
    Param("count", 2, "tiles per side", kind="int", minimum=1),
)
def repeat(images, values, context):
    """Tile the image `count` x `count` times.

    With `random_rotate` and `center_crop` afterwards, the corners of a rotated view show
    the neighbouring tile instead of padding, so the image edges get trained as well.
    """
    count = values["count"]
    return images.repeat(1, 1, count, count)


@TRANSFORMS.register(
    Param("factor", 0.5, "contrast multiplier", kind="float"),
    Param("center", 0.5, "value that stays fixed (0: plain multiplication)", kind="float"),
)
def mul(images, values, context):
    """Scale the contrast: `center + (pixel - center) * factor`.

    Showing CLIP a low-contrast view (factor < 1) makes the pixels move further per step,
    which raises the contrast of the result.
    """
    return values["center"] + (images - values["center"]) * values["factor"]


@TRANSFORMS.register(
    Param("kernel_size", 3, "kernel side in pixels (made odd)", kind="int", minimum=1),
    Param("sigma", None, "standard deviation in pixels; none derives it from the kernel size", kind="float",
          minimum=0),
)
def blur(images, values, context):
    """Gaussian blur."""
    return gaussian_blur(images, values["kernel_size"], values["sigma"])


@TRANSFORMS.register(
    Param("probability", 0.5, "chance that a view is mirrored", kind="float", minimum=0, maximum=1),
)
def flip(images, values, context):
    """Mirror views horizontally at random."""
    flipped = _chance(context, values["probability"], images)
    return torch.where(flipped[:, None, None, None], images.flip(-1), images)


@TRANSFORMS.register(
    Param("scale", (0.5, 1.0), "range of the crop side as a fraction of the image side", kind="floats",
          count=(2,), minimum=0.01, maximum=1),
    Param("whole", 0.125, "fraction of each image's views that show the whole image", kind="float",
          minimum=0, maximum=1),
    Param("flip", 0.5, "chance that a view is mirrored", kind="float", minimum=0, maximum=1),
    Param("degree", (-5.0, 5.0), "range of the rotation in degrees", kind="floats", count=(2,)),
    Param("shear", (-3.0, 3.0), "range of the shear in degrees", kind="floats", count=(2,)),
    Param("grayscale", 0.0, "chance that a view is shown in grey", kind="float", minimum=0, maximum=1),
    Param("noise", 0.02, "standard deviation of gaussian noise added to the views", kind="float", minimum=0),
    PADDING,
)
def cutouts(images, values, context):
    """Random square crops at several scales, sampled straight to the CLIP resolution.

    Each view is a crop whose side is a random fraction (`scale`) of the image side at a random
    position, with a small random rotation and shear and an optional mirror; the first
    `round(whole * cutn)` views of each image show the whole image instead (for a non-square image,
    a square of its shorter side at a random position). All views are sampled
    with one `affine_grid` + `grid_sample`, then noise is added. Usually the first transform of a chain.
    """
    count, channels, height, width = images.shape
    out_size = context.out_size
    side = min(height, width)
    scale_low, scale_high = values["scale"]
    # Bilinear sampling of a crop much larger than the output aliases; area-shrink first.
    shrink = int(scale_low * side // out_size)
    if shrink >= 2:
        images = F.interpolate(images, size=(height // shrink, width // shrink), mode="area")
        height, width = images.shape[-2:]
        side = min(height, width)

    scales = _uniform(context, scale_low, scale_high, images)
    view_index = torch.arange(count, device=images.device) % context.n_views
    whole = view_index < math.floor(values["whole"] * context.n_views + 0.5)  # round half up
    scales = torch.where(whole, torch.ones_like(scales), scales)

    # Crop side in normalised units per axis; the centre keeps the crop inside the image.
    extent_x = scales * side / width
    extent_y = scales * side / height
    offsets = _uniform(context, -1.0, 1.0, images, 2)
    centers = torch.stack([offsets[:, 0] * (1 - extent_x), offsets[:, 1] * (1 - extent_y)], dim=1)

    degree_low, degree_high = values["degree"]
    shear_low, shear_high = values["shear"]
    angles = _uniform(context, degree_low, degree_high, images)
    shears = torch.tan(_uniform(context, shear_low, shear_high, images) * (math.pi / 180))
    mirrored = _chance(context, values["flip"], images)
    mirror = torch.where(mirrored, -torch.ones_like(scales), torch.ones_like(scales))
    shear_matrix = torch.zeros(count, 2, 2, device=images.device, dtype=images.dtype)
    shear_matrix[:, 0, 0] = mirror
    shear_matrix[:, 0, 1] = shears
    shear_matrix[:, 1, 1] = 1
    # Output pixel p (square, in -1..1) -> input pixel units: half crop side * R * shear * mirror * p.
    half_side = (scales * side / 2)[:, None, None]
    pixel_linear = half_side * (rotation_matrices(angles) @ shear_matrix)
    linear = pixel_linear / pixel_linear.new_tensor([width / 2, height / 2])[None, :, None]
    theta = torch.cat([linear, centers[:, :, None]], dim=2)
    views = affine_sample(images, theta, (out_size, out_size), values["padding"])

    if values["grayscale"] > 0:
        grey = (views * views.new_tensor(LUMINANCE).view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(views)
        greyed = _chance(context, values["grayscale"], images)
        views = torch.where(greyed[:, None, None, None], grey, views)
    if values["noise"] > 0:
        views = views + _normal(context, views) * values["noise"]
    return views


# ---------------------------------------------------------------- the chain


@dataclass(frozen=True)
class ViewChain:
    """A configured chain of transforms; call it to get the views CLIP sees."""

    steps: tuple[Configured, ...]
    out_size: int

    def __call__(
        self, images: torch.Tensor, progress: float, generator: torch.Generator, n_views: int
    ) -> torch.Tensor:
        """Views `[B * n_views, 3, out_size, out_size]` of `images [B, 3, H, W]` at `progress` (0..1).

        The views of image `i` are rows `i * n_views ... i * n_views + n_views - 1`; view `j` of every
        image uses the same random draw, so an image's views do not depend on the rest of the batch.
        A generator on the images' device avoids copying the random numbers.
        """
        if n_views < 1:
            raise ValueError(f"n_views must be at least 1, got {n_views}")
        context = ViewContext(generator, min(images.shape[-2:]), self.out_size, n_views, images.shape[0])
        views = images.repeat_interleave(n_views, dim=0)
        for step in self.steps:
            if step.active(progress):
                views = step.entry.function(views, step.values_at(progress), context)
        return resize(views, self.out_size)


def build_chain(config: list | None, out_size: int, total_steps: int | None = None) -> ViewChain:
    """Parse a transform config (None: `DEFAULT_VIEWS`) into a `ViewChain` ending at `out_size` pixels.

    `total_steps` is needed only when a `start`/`end` is given in steps.
    """
    if config is None:
        config = DEFAULT_VIEWS
    return ViewChain(tuple(TRANSFORMS.configure_list(config, total_steps)), int(out_size))
