"""The renderer: optimise an image's parameters toward CLIP targets, one target per stage.

One function, `replay`, runs the inner loop for a batch of P prompts at once (`pixels`: the drawer's
parameters [P, ...], stage targets [P,S,D]); `normal`, `microwave`, `auto_microwave` and the bake all call
it. It uses a *functional* Adam so the same loop can also be differentiated (see `unroll`), which is how a
bake's meta-loss reaches the guides.

The recipe's drawer (`core.drawers`) turns the parameters into an image: by default raw pixels mapped by
`(raw + 1) / 2`, which the range penalty keeps in [0, 1]. CLIP sees the image normalised by its own
mean/std (`Clip.encode_images`).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, fields
from typing import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from core.constraints import build_constraints
from core.drawers import DEFAULT_DRAWER, build_drawer, uniform_pixels
from core.limits import MAX_CUTN, MAX_SIZE, MAX_STEPS_PER_STAGE
from core.losses import range_penalty, spherical_distance, total_variation
from core.models import Clip
from core.postproc import build_postproc
from core.transforms import DEFAULT_VIEWS, build_chain


@dataclass
class RenderSettings:
    """How pixels are optimised: the inner loop of every script (a recipe's render part).

    Every field is a recipe key (`core.recipes`), documented by its `help`; a number or a text is also a
    command-line flag of every script that renders (`--steps-per-stage` from `steps_per_stage`, `core.cli`).
    """

    size: int = field(default=128, metadata={"help": "side of the rendered image in pixels", "minimum": 8,
                                             "maximum": MAX_SIZE})
    steps_per_stage: int = field(default=30, metadata={"help": "optimisation steps per stage", "minimum": 1,
                                                       "maximum": MAX_STEPS_PER_STAGE})
    drawer: str | dict = field(default=DEFAULT_DRAWER, metadata={
        "help": "how the image is parametrised: a drawer's name, or {name: parameters} in a recipe (see Drawers)",
        "kind": "entry"})
    lr: float = field(default=0.12, metadata={"help": "learning rate of the pixel optimiser (Adam)", "minimum": 0})
    lr_end: float = field(default=1.0, metadata={
        "help": "the learning rate at the last step, as a share of lr (cosine decay over the run; 1: constant)",
        "minimum": 0, "maximum": 1})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the pixel optimiser",
                                                       "minimum": 0})
    tv_weight: float = field(default=1.4, metadata={"help": "weight of the total-variation loss (smoothness)",
                                                    "minimum": 0})
    range_weight: float = field(default=1.0, metadata={"help": "weight of the penalty on pixels outside [0, 1]",
                                                       "minimum": 0})
    cutn: int = field(default=8, metadata={"help": "augmented views per image per step", "minimum": 1,
                                           "maximum": MAX_CUTN})
    # None = the default cutouts
    views: list | None = field(default=None, metadata={"help": "transform chain (see Transforms)",
                                                       "recipe_default": DEFAULT_VIEWS})
    constraints: list = field(default_factory=list, metadata={"help": "constraints (see Constraints)"})
    postproc: list = field(default_factory=list, metadata={"help": "post-processing (see Post-processing)"})

    @classmethod
    def from_recipe(cls, recipe: dict) -> "RenderSettings":
        """The render part of a recipe dict (unknown keys belong to other parts and are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in recipe.items() if key in names and value is not None})


@dataclass
class AdamState:
    """Adam's running moments for the pixels; plain tensors so updates can stay in the autograd graph."""

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int = 0


def adam_update(grad: torch.Tensor, pixels: torch.Tensor, state: AdamState, lr: float,
                weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
    """One AdamW step as a pure function: returns (update to add to pixels, new state).

    Differentiable in `grad` and `pixels` when they carry a graph; the moments carried to the next step
    are detached (the meta-gradient flows through the pixels only, see `replay`).
    """
    beta1, beta2 = betas
    step = state.step + 1
    exp_avg = state.exp_avg * beta1 + grad * (1 - beta1)
    exp_avg_sq = state.exp_avg_sq * beta2 + grad * grad * (1 - beta2)
    bias1 = 1 - beta1 ** step
    bias2 = 1 - beta2 ** step
    # The clamp changes no value Adam meets (float32 rounds v + 1e-30 to v), but keeps the gradient of the
    # square root finite where a parameter's gradient is exactly 0 (a shape off the image): inf * 0 is NaN.
    denominator = (exp_avg_sq / bias2).clamp_min(1e-30).sqrt() + eps
    update = -lr * (exp_avg / bias1) / denominator - lr * weight_decay * pixels
    return update, AdamState(exp_avg.detach(), exp_avg_sq.detach(), step)


def to_image(pixels: torch.Tensor) -> torch.Tensor:
    """Raw pixels -> image values (ideally in [0, 1]); not clamped, so gradients flow everywhere."""
    return (pixels + 1) / 2


def random_pixels(seeds: list[int], size: int, device: torch.device) -> torch.Tensor:
    """Uniform random raw pixels [P,3,size,size], one seeded generator per prompt.

    Per-prompt generators make a prompt's start independent of what else is in the batch.
    """
    return uniform_pixels(seeds, size).to(device)


def drawer_of(settings: RenderSettings):
    """The settings' drawer at their image size (`core.drawers`)."""
    return build_drawer(settings.drawer, settings.size)


def random_start(settings: RenderSettings, seeds: list[int], device: torch.device) -> torch.Tensor:
    """The drawer's random start [P, ...], one seeded generator per prompt (the pixels drawer:
    `random_pixels`)."""
    return drawer_of(settings).init(seeds, device)


def image_start(settings: RenderSettings, images: torch.Tensor) -> torch.Tensor:
    """The drawer's parameters [P, ...] that draw images [P,3,H,W] in [0, 1] (for --init)."""
    return drawer_of(settings).from_image(images)


def draw(settings: RenderSettings, pixels: torch.Tensor) -> torch.Tensor:
    """The image [P,3,H,W] of the drawer's parameters, clamped to [0, 1]: what is saved or judged."""
    return drawer_of(settings).image(pixels).clamp(0, 1)


@dataclass
class Pipeline:
    """The recipe's pluggable parts, built once per run."""

    drawer: object  # parameters [P, ...] -> images [P,3,H,W] (`core.drawers`)
    views: Callable  # (images, progress, generator, n_views) -> views [P*n_views, 3, r, r]
    constraints: Callable  # (images, progress) -> [P]
    postproc: Callable  # (images, progress) -> images

    @classmethod
    def build(cls, settings: RenderSettings, clip: Clip, total_steps: int | None = None) -> "Pipeline":
        """Build the parts; `total_steps` resolves `start`/`end` given in steps."""
        views = settings.views if settings.views is not None else DEFAULT_VIEWS
        return cls(drawer_of(settings), build_chain(views, clip.image_size, total_steps),
                   build_constraints(settings.constraints, total_steps),
                   build_postproc(settings.postproc, total_steps))


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (CLIP is fast and accurate enough there); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def guide_loss(clip: Clip, pixels: torch.Tensor, targets: torch.Tensor, settings: RenderSettings,
               pipeline: Pipeline, progress: float, generator: torch.Generator,
               twice_differentiable: bool = False) -> torch.Tensor:
    """The inner loss per prompt [P]: mean spherical distance of the views to the target + regularisers."""
    images = pipeline.drawer.image(pixels)
    batch = images.shape[0]
    views = pipeline.views(images, progress, generator, settings.cutn)
    encode = clip.encode_images if twice_differentiable else clip.encode_images_fast
    with autocast_for(pixels.device):
        embeddings = encode(views)
    embeddings = embeddings.view(batch, settings.cutn, -1)
    distance = clip.distance(embeddings, targets[:, None, :]).mean(dim=1)
    return (distance + settings.tv_weight * total_variation(images) + pipeline.drawer.penalty(pixels)
            + settings.range_weight * range_penalty(images) + pipeline.constraints(images, progress))


def final_embeddings(clip: Clip, images: torch.Tensor, views: Callable | None = None, n_views: int = 0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """CLIP embeddings [P, V, D] of final images [P,3,H,W]: the image itself (V = 1), or, with a `views` chain
    and `n_views > 0`, that many augmented views of it."""
    images = images.clamp(0, 1)
    if views is None or n_views <= 0:
        with autocast_for(images.device):
            return clip.encode_images(images)[:, None]
    with autocast_for(images.device):
        embeddings = clip.encode_images(views(images, 1.0, generator, n_views))
    return embeddings.view(images.shape[0], n_views, -1)


def learning_rate(settings: RenderSettings, step: int, total: int) -> float:
    """`lr` at `step` of `total`: cosine from lr down to lr * lr_end at the last step (constant when lr_end = 1)."""
    if settings.lr_end == 1.0 or total <= 1:
        return settings.lr
    cosine = 0.5 * (1 + math.cos(math.pi * step / (total - 1)))
    return settings.lr * (settings.lr_end + (1 - settings.lr_end) * cosine)


StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


def replay(clip: Clip, stage_targets: torch.Tensor, settings: RenderSettings, start: torch.Tensor,
           view_seed: int = 0, unroll: int = 0, on_step: StepCallback | None = None,
           pipeline: Pipeline | None = None) -> torch.Tensor:
    """Optimise `start` [P, ...] (the drawer's parameters, raw pixels [P,3,H,W] by default) toward
    stage_targets [P,S,D], `steps_per_stage` steps a stage.

    One Adam runs through all stages, so a path whose stages all equal the prompt is exactly a plain
    ("normal") run of the same total steps.

    `unroll=K > 0` keeps the autograd graph of the last K steps of every stage (functional Adam with
    `create_graph`), so a loss on the returned pixels can be differentiated w.r.t. `stage_targets`.
    The other steps are treated as identity maps of the pixels (their update is detached): the
    gradient passes through them unchanged instead of being cut. This truncated, stage-wise unroll
    costs S·K double-backward steps of memory instead of S·steps.

    `on_step(step, pixels, losses)` is called after every step (losses detached, [P]).
    View augmentations are drawn from one generator seeded with `view_seed` and shared by all prompts
    of the batch, so a prompt's run does not depend on the batch it is in.
    """
    stages = stage_targets.shape[1]
    pipeline = pipeline or Pipeline.build(settings, clip, stages * settings.steps_per_stage)
    generator = torch.Generator(device=clip.device).manual_seed(int(view_seed))
    pixels = start
    state = AdamState(torch.zeros_like(start), torch.zeros_like(start))
    total = stages * settings.steps_per_stage
    with torch.enable_grad():  # the inner loop needs gradients even under no_grad
        for step in range(total):
            stage, within = divmod(step, settings.steps_per_stage)
            differentiable = unroll > 0 and within >= settings.steps_per_stage - unroll
            targets = stage_targets[:, stage]
            progress = step / total
            lr = learning_rate(settings, step, total)
            if differentiable:
                if not pixels.requires_grad:
                    pixels = pixels.detach().requires_grad_(True)
                # Double backward through attention needs the math kernel; the other steps keep the fast ones.
                with sdpa_kernel(SDPBackend.MATH):
                    losses = guide_loss(clip, pixels, targets, settings, pipeline, progress, generator,
                                        twice_differentiable=True)
                    (grad,) = torch.autograd.grad(losses.sum(), pixels, create_graph=True)
                update, state = adam_update(grad, pixels, state, lr, settings.weight_decay)
            else:
                leaf = pixels.detach().requires_grad_(True)
                losses = guide_loss(clip, leaf, targets.detach(), settings, pipeline, progress, generator)
                (grad,) = torch.autograd.grad(losses.sum(), leaf)
                update, state = adam_update(grad, leaf.detach(), state, lr, settings.weight_decay)
                update = update.detach()
            pixels = pixels + update
            if settings.postproc:
                with torch.no_grad():
                    edited = pipeline.drawer.from_image(pipeline.postproc(pipeline.drawer.image(pixels.detach()),
                                                                          progress))
                pixels = pixels + (edited - pixels.detach())  # straight-through: the edit has no gradient
            if on_step is not None:
                on_step(step, pixels.detach(), losses.detach())
    return pixels


def blend(stage_targets: torch.Tensor, prompt_embedding: torch.Tensor, prompt_weight: float) -> torch.Tensor:
    """Stage targets [.., S, D] mixed with a prompt embedding [.., D]: (1−w)·stage + w·prompt, unit inputs."""
    stages = torch.nn.functional.normalize(stage_targets, dim=-1)
    prompt = torch.nn.functional.normalize(prompt_embedding, dim=-1).unsqueeze(-2)
    return (1 - prompt_weight) * stages + prompt_weight * prompt


class ProgressReporter:
    """An `on_step` callback driving a tqdm bar; reads the loss (a host sync) at most every 0.5 s."""

    def __init__(self, total: int, desc: str, enabled: bool = True, interval: float = 0.5):
        self.bar = tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
        self.interval = interval
        self.last = 0.0

    def __call__(self, step: int, pixels: torch.Tensor, losses: torch.Tensor) -> None:
        self.bar.update(1)
        now = time.monotonic()
        if now - self.last > self.interval:
            self.last = now
            self.bar.set_postfix(loss=f"{losses.mean().item():.4f}")

    def close(self) -> None:
        self.bar.close()
