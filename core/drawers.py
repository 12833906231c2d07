"""Drawers: how the optimised numbers become an image (the recipe key `drawer`).

The renderer never optimises an image directly: it optimises a drawer's parameters, one tensor per
batch `[P, ...]` (`init`), and shows CLIP `image(parameters)` `[P,3,H,W]`, values ideally in [0, 1] (not
clamped, so gradients flow everywhere). Every drawer is built from twice-differentiable torch operations
(`interpolate`, `irfft2`, `sigmoid`, products), so the bake's unrolled meta-gradient runs through it like
through the pixels. Each prompt's start comes from its own seeded generator, so a run does not depend on
the batch it is in.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F

from core.errors import UserError
from core.limits import MAX_SHAPE_PIXELS
from core.registry import Param, Registry

DRAWERS = Registry(
    "drawer",
    "Drawers",
    """
    The `drawer` of a recipe: how the image is parametrised. A name (`drawer: fft`) or a name with
    parameters (`drawer: {shapes: {count: 16}}`); the default is `pixels`. The learning rate `lr`, the
    regularisers and the views apply to every drawer. `postproc` edits pixels, so it needs the `pixels`
    drawer; `--init IMAGE` works with every drawer that can be inverted (all but `shapes`).
    """,
)

DEFAULT_DRAWER = "pixels"
MAX_SHAPES = 1024
MAX_LEVELS = 12


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def uniform_pixels(seeds: list[int], size: int) -> torch.Tensor:
    """Uniform random raw pixels [P,3,size,size] in [-1, 1], one seeded generator per prompt."""
    return torch.stack([torch.rand(3, size, size, generator=_generator(seed)) * 2 - 1 for seed in seeds])


class Drawer:
    """What every drawer shares: no prior of its own on its parameters unless it says otherwise."""

    invertible = True

    def penalty(self, params: torch.Tensor) -> torch.Tensor:
        """The drawer's own regulariser per image [P], added to the guide's loss (none: zeros)."""
        return params.new_zeros(params.shape[0])


class Pixels(Drawer):
    """Raw RGB pixels, image = (raw + 1) / 2; the range penalty keeps them in [0, 1]."""

    def __init__(self, size: int, values: dict):
        self.size = size

    def init(self, seeds: list[int], device: torch.device) -> torch.Tensor:
        return uniform_pixels(seeds, self.size).to(device)

    def image(self, params: torch.Tensor) -> torch.Tensor:
        return (params + 1) / 2

    def from_image(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1


# The square root of the colour correlation of natural images (ImageNet), as used in feature visualisation:
# optimising in these decorrelated channels lets every channel move what the eye sees as one colour change.
_COLOUR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))


def colour_matrix(device: torch.device) -> torch.Tensor:
    matrix = torch.tensor(_COLOUR_SQRT, device=device)
    return matrix / matrix.norm(dim=0).max()


class Fourier(Drawer):
    """A spectrum scaled by 1/f^decay, to decorrelated colour, to [0, 1] by a sigmoid."""

    def __init__(self, size: int, values: dict):
        self.size, self.decay = size, values["decay"]
        self.gain, self.init_std = values["gain"], values["init_std"]

    def _scale(self, device: torch.device) -> torch.Tensor:
        # [H, W//2+1]: the low frequencies carry most of a natural image, so they get the largest steps.
        fy = torch.fft.fftfreq(self.size, device=device)[:, None]
        fx = torch.fft.rfftfreq(self.size, device=device)[None, :]
        frequency = (fx * fx + fy * fy).sqrt().clamp_min(1.0 / self.size)
        return self.gain * frequency ** -self.decay

    def init(self, seeds: list[int], device: torch.device) -> torch.Tensor:
        shape = (3, self.size, self.size // 2 + 1, 2)
        spectra = [torch.randn(*shape, generator=_generator(seed)) * self.init_std for seed in seeds]
        return torch.stack(spectra).to(device)

    def image(self, params: torch.Tensor) -> torch.Tensor:
        spectrum = torch.complex(params[..., 0], params[..., 1]) * self._scale(params.device)
        decorrelated = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        rgb = torch.einsum("pchw,dc->pdhw", decorrelated, colour_matrix(params.device))
        return torch.sigmoid(rgb)

    def from_image(self, images: torch.Tensor) -> torch.Tensor:
        rgb = torch.logit(images.clamp(1e-3, 1 - 1e-3))
        decorrelated = torch.einsum("pdhw,dc->pchw", rgb, torch.linalg.inv(colour_matrix(images.device)).T)
        spectrum = torch.fft.rfft2(decorrelated, norm="ortho") / self._scale(images.device)
        return torch.stack([spectrum.real, spectrum.imag], dim=-1)


class Pyramid(Drawer):
    """Images at `levels` scales (each half the side of the one before), upsampled and summed; image =
    (sum + 1) / 2. One step of a coarse level moves a whole region, so layout forms before detail."""

    def __init__(self, size: int, values: dict):
        self.size = size
        self.sides = [max(1, math.ceil(size / 2 ** level)) for level in range(values["levels"])]

    def _split(self, params: torch.Tensor) -> list[torch.Tensor]:
        counts = [3 * side * side for side in self.sides]
        parts = torch.split(params, counts, dim=1)
        return [part.reshape(-1, 3, side, side) for part, side in zip(parts, self.sides)]

    def _join(self, levels: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([level.flatten(1) for level in levels], dim=1)

    def init(self, seeds: list[int], device: torch.device) -> torch.Tensor:
        # The finest level starts as the pixels drawer does, the coarse ones at zero: the same first image.
        finest = uniform_pixels(seeds, self.size)
        coarse = [torch.zeros(len(seeds), 3, side, side) for side in self.sides[1:]]
        return self._join([finest, *coarse]).to(device)

    def image(self, params: torch.Tensor) -> torch.Tensor:
        levels = self._split(params)
        total = levels[0]
        for level in levels[1:]:
            total = total + F.interpolate(level, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (total + 1) / 2

    def from_image(self, images: torch.Tensor) -> torch.Tensor:
        coarse = [images.new_zeros(images.shape[0], 3, side, side) for side in self.sides[1:]]
        return self._join([images * 2 - 1, *coarse])


class Shapes(Drawer):
    """`count` soft-edged shapes over a background, painted back to front (CLIPDraw-like, in plain torch).

    Each shape is a row: its geometry (centre x and y, log radius), colour logits R G B, opacity logit; the
    last row holds the background's colour logits. A pixel's cover by a shape falls off over `softness`
    pixels at its edge (a sigmoid), so position, size and colour all get gradients.
    """

    name = "shapes"
    invertible = False
    geometry = 3  # numbers a shape's outline takes, before its colour and opacity

    def __init__(self, size: int, values: dict):
        self.size, self.count = size, values["count"]
        if self.count * size * size > MAX_SHAPE_PIXELS:  # each shape's cover of the image is held at once
            raise UserError(f"the {self.name} drawer holds {self.name} x size^2 numbers per image: {self.count} x "
                            f"{size}^2 is over the limit of {MAX_SHAPE_PIXELS:,}; use fewer {self.name} or a "
                            "smaller size")
        self.softness, self.gain = values["softness"], values["gain"]
        self.form = values.get("form", "circle")
        self.backdrop = values["backdrop"]
        self.opacity = values["opacity"]

    def _outlines(self, count: int, generator: torch.Generator) -> torch.Tensor:
        centre = (torch.rand(count, 2, generator=generator) * 2 - 1) / self.gain
        radius = torch.empty(count, 1).uniform_(math.log(0.05), math.log(0.3), generator=generator)
        return torch.cat([centre, radius / self.gain], dim=1)

    def init(self, seeds: list[int], device: torch.device) -> torch.Tensor:
        rows = []
        for seed in seeds:
            generator = _generator(seed)
            outlines = self._outlines(self.count, generator)
            colour = torch.randn(self.count, 3, generator=generator)
            shapes = torch.cat([outlines, colour, torch.full((self.count, 1), self.opacity)], dim=1)
            background = torch.cat([torch.zeros(self.geometry), torch.randn(3, generator=generator) * 0.5,
                                    torch.zeros(1)])
            rows.append(torch.cat([shapes, background[None]]))
        return torch.stack(rows).to(device)

    def _inside(self, shapes: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        """How far inside its outline each pixel is, in the grid's units [P, N, H, W] (negative: outside)."""
        if self.form == "square":
            distance = torch.maximum(dx.abs(), dy.abs())
        else:  # the small constant keeps the square root's gradient finite at a shape's centre
            distance = (dx * dx + dy * dy + 1e-8).sqrt()
        return (self.gain * shapes[:, :, 2]).exp()[..., None, None] - distance

    def image(self, params: torch.Tensor) -> torch.Tensor:
        shapes, background = params[:, :-1], params[:, -1]
        grid = (torch.arange(self.size, device=params.device, dtype=params.dtype) + 0.5) / self.size * 2 - 1
        dx = grid[None, None, None, :] - self.gain * shapes[:, :, 0, None, None]  # [P, N, 1, W]
        dy = grid[None, None, :, None] - self.gain * shapes[:, :, 1, None, None]  # [P, N, H, 1]
        edge = self.softness * 2 / self.size  # softness in pixels, in the grid's units
        cover = torch.sigmoid(self._inside(shapes, dx, dy) / edge) * torch.sigmoid(shapes[:, :, -1])[..., None, None]
        clear = 1 - cover  # [P, N, H, W]
        # What shows of shape i is its cover times what the shapes above it leave clear.
        above = torch.cumprod(torch.cat([clear[:, 1:], torch.ones_like(clear[:, :1])], dim=1).flip(1), dim=1).flip(1)
        colours = torch.sigmoid(shapes[:, :, -4:-1])[..., None, None]  # [P, N, 3, 1, 1]
        painted = ((cover * above)[:, :, None] * colours).sum(dim=1)
        uncovered = (clear[:, :1] * above[:, :1])  # [P, 1, H, W]: clear of every shape
        backdrop = background[:, -4:-1]
        if self.backdrop == "grey":  # one brightness for all three channels: any hue must come from a shape
            backdrop = backdrop.mean(dim=1, keepdim=True).expand(-1, 3)
        return painted + uncovered * torch.sigmoid(backdrop)[..., None, None]

    def from_image(self, images: torch.Tensor) -> torch.Tensor:
        raise UserError(f"the {self.name} drawer cannot start from an image (--init); add --drawer pixels (or fft, "
                        "pyramid)")


class Outlines(Shapes):
    """Star-shaped outlines: a shape's radius at `vertices` evenly spaced angles, linearly interpolated
    between them, so one shape can become a circle, a polygon, a star or a cross. Its geometry is the
    centre and the log radius at each angle; each starts as a circle."""

    name = "outlines"

    def __init__(self, size: int, values: dict):
        super().__init__(size, values)
        self.vertices = values["vertices"]
        self.geometry = 2 + self.vertices
        self.roundness = values["roundness"]

    def penalty(self, params: torch.Tensor) -> torch.Tensor:
        """`roundness` times the mean over outlines of their log radii's variance: 0 for circles, so an outline
        keeps corners and arms only where the guide's gradient pays for them (measured: README, "Drawers")."""
        if not self.roundness:  # off: no work in the renderer's loop
            return super().penalty(params)
        return self.roundness * self._log_radii(params[:, :-1]).var(dim=-1, unbiased=False).mean(dim=-1)

    def _log_radii(self, shapes: torch.Tensor) -> torch.Tensor:
        """Each outline's log radius at its `vertices` angles [P, N, V], from its rows [P, N, ...]."""
        return self.gain * shapes[:, :, 2:2 + self.vertices]

    def _outlines(self, count: int, generator: torch.Generator) -> torch.Tensor:
        circles = super()._outlines(count, generator)
        return torch.cat([circles[:, :2], circles[:, 2:].expand(count, self.vertices)], dim=1)

    def _inside(self, shapes: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        dx, dy = torch.broadcast_tensors(dx, dy)
        distance = (dx * dx + dy * dy + 1e-8).sqrt()
        # The angle picks which radii apply; it is not differentiated (atan2's gradient is 0/0 at the centre),
        # so a centre moves by its distance term alone.
        turns = (torch.atan2(dy.detach(), dx.detach()) / (2 * math.pi) + 0.5) * self.vertices
        below = turns.floor()
        weight = turns - below
        first = below.long() % self.vertices
        log_radii = self._log_radii(shapes)

        def radius_at(index: torch.Tensor) -> torch.Tensor:  # [P, N, H, W] angles' indices -> log radii
            return log_radii.gather(-1, index.flatten(2)).reshape(index.shape)

        log_radius = (1 - weight) * radius_at(first) + weight * radius_at((first + 1) % self.vertices)
        return log_radius.exp() - distance


# Opacity is a logit: 1.0 (73 % opaque) lets every shape show from the first step.
OPACITY = Param("opacity", 1.0, "each shape's opacity logit at the start (sigmoid: 1.0 is 73 % opaque)",
                minimum=-10, maximum=10)


@DRAWERS.register()
def pixels(size, values):
    """Raw RGB pixels (the default): one number per pixel and channel, image = (raw + 1) / 2."""
    return Pixels(size, values)


@DRAWERS.register(
    Param("decay", 1.0, "the spectrum's 1/f exponent: higher favours large, smooth forms", minimum=0, maximum=4),
    Param("gain", 0.25, "scale of the spectrum: the size of one optimiser step", minimum=1e-4, maximum=100),
    Param("init_std", 0.05, "standard deviation of the random start's spectrum", minimum=0, maximum=10),
)
def fft(size, values):
    """A decorrelated-colour, 1/f-scaled spectrum (feature visualisation, Aphantasia), through a sigmoid."""
    return Fourier(size, values)


@DRAWERS.register(
    Param("levels", 4, "scales, each half the side of the one before", kind="int", minimum=1, maximum=MAX_LEVELS),
)
def pyramid(size, values):
    """A sum of upsampled images at several scales (a Laplacian-pyramid-like parametrisation)."""
    return Pyramid(size, values)


@DRAWERS.register(
    Param("count", 32, "number of shapes", kind="int", minimum=1, maximum=MAX_SHAPES),
    Param("softness", 1.0, "width of a shape's edge in pixels", minimum=0.05, maximum=64),
    Param("form", "circle", "shape of every shape", kind="text", choices=("circle", "square")),
    Param("gain", 0.5, "scale of positions and radii: the size of one optimiser step", minimum=1e-3, maximum=10),
    Param("backdrop", "free", "the background behind the shapes: free (any colour) or grey (brightness only)",
          kind="text", choices=("free", "grey")),
    OPACITY,
)
def shapes(size, values):
    """Soft-rasterised circles or squares over a background, differentiable in plain torch (as CLIPDraw)."""
    return Shapes(size, values)


@DRAWERS.register(
    Param("count", 32, "number of outlines", kind="int", minimum=1, maximum=MAX_SHAPES),
    Param("vertices", 16, "angles at which an outline's radius is free", kind="int", minimum=3, maximum=64),
    Param("softness", 1.0, "width of an outline's edge in pixels", minimum=0.05, maximum=64),
    Param("roundness", 0.0, "weight of a pull of every outline toward a circle (its log radii's variance)",
          minimum=0, maximum=1000),
    Param("gain", 0.25, "scale of positions and radii: the size of one optimiser step", minimum=1e-3, maximum=10),
    Param("backdrop", "free", "the background behind the shapes: free (any colour) or grey (brightness only)",
          kind="text", choices=("free", "grey")),
    OPACITY,
)
def outlines(size, values):
    """A few soft star-shaped outlines (radius free at each of `vertices` angles): circles, polygons, stars."""
    return Outlines(size, values)


def build_drawer(config, size: int):
    """The drawer of a recipe's `drawer` value (a name or {name: parameters}; None: pixels) at `size`."""
    configured = DRAWERS.configure(DEFAULT_DRAWER if config is None else config)
    if configured.start != 0.0 or configured.end != 1.0:
        raise UserError("a drawer cannot be scheduled (start/end): it is the image itself")
    return configured.entry.function(int(size), configured.values)


def drawer_name(config) -> str:
    """The name of a recipe's drawer value (validated)."""
    return DRAWERS.configure(DEFAULT_DRAWER if config is None else config).entry.name
