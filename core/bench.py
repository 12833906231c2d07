"""The benchmark: how close the inner loop comes to the hardware's ceiling, and to the original tool.

Four measurements in one run, each the best of `repeats` timed runs after a short warm-up:

- the *ceiling*: CLIP's image encoder forward + backward w.r.t. its input (frozen weights) on a large
  batch, in images/s (bf16 autocast on CUDA, as the renderer uses);
- the project's inner loop, `core.render.replay`, on P prompts at once, in prompt-steps/s (P prompts
  advanced by one step = P prompt-steps; each step shows CLIP `cutn` views of every prompt);
- the original loop's shape: one prompt, fp32, a new `torch.optim.AdamW` every stage, one cutout a step;
- a bake at the default recipe (meta-gradient and critic included) of P prompts, timed over a few
  meta-steps and its held-out comparison, as prompts an hour of a full bake (`bake_rate`).

Ratios: best P against the ceiling as (prompt-steps/s · cutn) / (images/s), the share of the
ceiling's CLIP throughput the loop gets (the rest goes to augmentations, the loss and Adam); best P
against the original as a plain speed-up. The default model is a random-init ViT-B/32 (same compute
as OpenAI's, no download), and the bake's critic a random-init RN50, the critic `--critic auto` gives it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from core.bake import bake_prompts
from core.bake_settings import BakeSettings
from core.jobs import BenchJob
from core.limits import check_batch
from core.losses import range_penalty, spherical_distance, total_variation
from core.meta_loss import Critic
from core.critics import resolve_critic
from core.models import Clip, _clip_package, load_clip, resolve_device
from core.render import Pipeline, RenderSettings, autocast_for, random_pixels, random_start, replay, to_image
from core.sizing import AUTO, resolve_batch_size

VIT_B_32 = "vit-b-32"
RN50 = "rn50"
# clip.model.CLIP's arguments up to the text tower (embed dim, resolution, vision layers, width, patch),
# as in OpenAI's ViT-B/32 and RN50; the text tower is the same for both
ARCHITECTURES = {VIT_B_32: (512, 224, 12, 768, 32), RN50: (1024, 224, (3, 4, 6, 3), 64, None)}
BAKE_AUTO_LIMIT = 64  # `--bake-prompts auto`: at most this many, so the bake is timed in minutes
STEPS_PER_STAGE = 10  # stage length of every measured loop (the original made a new AdamW each stage)


def bench_clip(name: str, device: str | torch.device = "auto") -> Clip:
    """The model to measure: `vit-b-32` or `rn50` (random init, OpenAI's architecture; same compute, no
    download) or any `load_clip` name."""
    if name not in ARCHITECTURES:
        return load_clip(name, device)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    embed_dim, image_size, *vision = ARCHITECTURES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _clip_package().model.CLIP(embed_dim, image_size, *vision, 77, 49408, 512, 8, 12)
    model = model.float().to(device).eval().requires_grad_(False)
    return Clip(model=model, name=name, embed_dim=embed_dim, image_size=image_size, device=device)


def bench_critic(name: str, guide: Clip) -> Clip | None:
    """The bake's critic: `auto` is RN50 (random init) for the ViT-B/32 guide, else what a bake would use."""
    if name == "auto" and guide.name == VIT_B_32:
        name = RN50
    name = resolve_critic(name, guide)
    return bench_clip(name, guide.device) if name else None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The fastest of `repeats` timed calls of `run` (the device synchronised around each)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        _synchronize(device)
        began = time.perf_counter()
        run()
        _synchronize(device)
        best = min(best, time.perf_counter() - began)
    return best


def ceiling_rate(clip: Clip, batch: int, repeats: int = 1) -> float:
    """Images/s of CLIP's image encoder forward + backward w.r.t. the input, at batch `batch`."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, clip.image_size, clip.image_size, generator=generator).to(clip.device)

    def run() -> None:
        inputs = images.clone().requires_grad_(True)
        with autocast_for(clip.device):
            embeddings = clip.encode_images_fast(inputs)  # compiled when the loop is (`--compile`)
        torch.autograd.grad(embeddings.float().square().sum(), inputs)

    run()  # warm-up: kernels, allocator
    return batch / best_seconds(run, clip.device, repeats)


def _targets(clip: Clip, prompts: int, stages: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    targets = torch.randn(prompts, stages, clip.embed_dim, generator=generator)
    return torch.nn.functional.normalize(targets, dim=-1).to(clip.device)


def _stage_settings(settings: RenderSettings, steps: int) -> tuple[RenderSettings, int]:
    """Settings of at most STEPS_PER_STAGE steps a stage, and the number of whole stages in `steps`."""
    per_stage = min(steps, STEPS_PER_STAGE)
    return replace(settings, steps_per_stage=per_stage), max(1, steps // per_stage)


def replay_rate(clip: Clip, prompts: int, settings: RenderSettings, steps: int, repeats: int = 1) -> float:
    """Prompt-steps/s of `core.render.replay` optimising `prompts` images at once for `steps` steps."""
    staged, stages = _stage_settings(settings, steps)
    targets = _targets(clip, prompts, stages)
    start = random_start(settings, list(range(prompts)), clip.device)
    pipeline = Pipeline.build(staged, clip)
    replay(clip, targets[:, :1], replace(staged, steps_per_stage=1), start,
           pipeline=pipeline)  # warm-up
    seconds = best_seconds(lambda: replay(clip, targets, staged, start, pipeline=pipeline), clip.device, repeats)
    return prompts * stages * staged.steps_per_stage / seconds


def sequential_rate(clip: Clip, runs: int, settings: RenderSettings, steps: int, repeats: int = 1) -> float:
    """Prompt-steps/s of `runs` one-prompt replays run one after another (what batching replaces)."""
    staged, stages = _stage_settings(settings, steps)
    targets = _targets(clip, runs, stages)
    starts = random_start(settings, list(range(runs)), clip.device)
    pipeline = Pipeline.build(staged, clip)
    replay(clip, targets[:1, :1], replace(staged, steps_per_stage=1), starts[:1],
           pipeline=pipeline)  # warm-up

    def run() -> None:
        for index in range(runs):
            replay(clip, targets[index:index + 1], staged, starts[index:index + 1], pipeline=pipeline)

    return runs * stages * staged.steps_per_stage / best_seconds(run, clip.device, repeats)


def original_rate(clip: Clip, settings: RenderSettings, steps: int, repeats: int = 1) -> float:
    """Steps/s of the original loop's shape: one prompt, fp32, a new AdamW each stage, one cutout a step."""
    staged, stages = _stage_settings(settings, steps)
    target = _targets(clip, 1, 1)[:, 0]
    pipeline = Pipeline.build(staged, clip)
    generator = torch.Generator(device=clip.device).manual_seed(0)

    def run(stage_count: int = stages, per_stage: int = staged.steps_per_stage) -> None:
        pixels = random_pixels([0], settings.size, clip.device).requires_grad_(True)
        for stage in range(stage_count):
            optimizer = torch.optim.AdamW([pixels], lr=settings.lr, weight_decay=settings.weight_decay)
            for step in range(per_stage):
                images = to_image(pixels)
                views = pipeline.views(images, (stage * per_stage + step) / (stage_count * per_stage), generator, 1)
                loss = (spherical_distance(clip.encode_images(views), target).mean()
                        + settings.tv_weight * total_variation(images).sum()
                        + settings.range_weight * range_penalty(images).sum())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    run(1, 1)  # warm-up
    return stages * staged.steps_per_stage / best_seconds(run, clip.device, repeats)


@dataclass
class BakeRate:
    """How fast a full bake of `prompts` prompts runs, from a steady meta-step and the bake's fixed part."""

    prompts: int
    meta_steps: int  # of the full bake the rate is for
    meta_step_seconds: float  # one meta-step of all P prompts, after the first (warm-up)
    fixed_seconds: float  # the held-out comparison with a normal run, once a bake
    inner_steps: int  # prompt-steps a meta-step: P x starts x stages x steps a stage
    critic: str

    def seconds(self) -> float:
        """Seconds of a full bake of the P prompts."""
        return self.fixed_seconds + self.meta_steps * self.meta_step_seconds

    def per_hour(self) -> float:
        """Prompts baked an hour, at this P."""
        return self.prompts * 3600 / self.seconds()

    def prompt_steps_per_second(self) -> float:
        """Inner prompt-steps/s while meta-stepping (meta-gradient and critic included)."""
        return self.inner_steps / self.meta_step_seconds


def bake_rate(clip: Clip, critic_clip: Clip | None, prompts: int, settings: RenderSettings, bake,
              measured_steps: int = 3) -> BakeRate:
    """Time a bake of `prompts` prompts (random embeddings) for `measured_steps` meta-steps.

    The fastest meta-step after the first (kernels, allocator and compilation warm up in it) stands for
    every meta-step of a full bake; the held-out comparison after the last meta-step is timed as it is.
    """
    critic = None
    if critic_clip is not None:
        critic = Critic(critic_clip, _targets(critic_clip, prompts, 1)[:, 0], bake.critic_weight)
    marks: list[float] = []

    def on_meta_step(step: int, point: dict) -> None:
        _synchronize(clip.device)
        marks.append(time.perf_counter())

    measured = replace(bake, meta_steps=max(2, measured_steps))
    bake_prompts(clip, _targets(clip, prompts, 1)[:, 0], settings, measured, list(range(prompts)),
                 on_meta_step=on_meta_step, critic=critic)
    _synchronize(clip.device)
    ended = time.perf_counter()
    steady = min(later - earlier for earlier, later in zip(marks, marks[1:]))
    inner_steps = prompts * max(1, bake.starts) * bake.stages * settings.steps_per_stage
    return BakeRate(prompts, bake.meta_steps, steady, ended - marks[-1], inner_steps,
                    critic_clip.name if critic_clip is not None else "none")


@dataclass
class BenchResult:
    """The figures of one benchmark run (rates: prompt-steps/s by P, None where P did not fit)."""

    device: str
    model: str
    size: int
    cutn: int
    steps: int
    threads: int
    ceiling_batch: int
    ceiling: float
    original: float
    rates: dict[int, float | None] = field(default_factory=dict)
    bake: BakeRate | None = None
    bake_recipe: str = ""  # the bake's settings, in words

    def best(self) -> tuple[int, float] | None:
        """(P, prompt-steps/s) of the fastest P that fitted."""
        measured = [(rate, prompts) for prompts, rate in self.rates.items() if rate is not None]
        if not measured:
            return None
        rate, prompts = max(measured)
        return prompts, rate

    def markdown(self) -> str:
        """The figures and their ratios as markdown tables."""
        precision = precision_of(torch.device(self.device))
        lines = [f"device {self.device} ({self.threads} CPU threads), model {self.model}, {self.size} px, "
                 f"cutn {self.cutn}, {self.steps} steps a run, torch {torch.__version__}", "",
                 "| what | setting | figure |", "|---|---|---|",
                 f"| ceiling: CLIP image forward+backward w.r.t. input, frozen weights | batch {self.ceiling_batch}, "
                 f"{precision} | {self.ceiling:,.1f} images/s |"]
        for prompts, rate in self.rates.items():
            figure = "out of memory" if rate is None else f"{rate:,.1f} prompt-steps/s"
            lines.append(f"| inner loop `core.render.replay` | P={prompts}, {precision}, {self.cutn} views | {figure} |")
        lines.append(f"| original loop shape | batch 1, fp32, new AdamW a stage, 1 cutout | {self.original:,.1f} steps/s |")
        if self.bake is not None:
            lines.append(f"| bake, meta-gradient included, critic {self.bake.critic} | P={self.bake.prompts}, "
                         f"{self.bake_recipe} | {self.bake.per_hour():,.1f} prompts/hour "
                         f"({self.bake.meta_step_seconds:.2f} s a meta-step, {self.bake.fixed_seconds:.1f} s "
                         f"held-out comparison) |")
        best = self.best()
        if best is not None:
            prompts, rate = best
            share = rate * self.cutn / self.ceiling
            lines += ["", "| ratio | value |", "|---|---|",
                      f"| best P (P={prompts}) / ceiling, as prompt-steps/s × cutn per image/s | "
                      f"{rate:,.1f} × {self.cutn} = {rate * self.cutn:,.1f} images/s = {share:.2f} of the ceiling |",
                      f"| best P (P={prompts}) / original | {rate / self.original:,.1f}× |"]
            if self.rates.get(8) and self.rates.get(1):
                lines.append(f"| P=8 / P=1 (a batch of 8 vs 8 sequential runs; CPU target ≥ 1.6×) | "
                             f"{self.rates[8] / self.rates[1]:.2f}× |")
        if self.bake is not None:
            rate = self.bake.prompt_steps_per_second()
            lines += [f"| bake's inner steps / ceiling, meta-gradient and critic included | {rate:,.1f} × "
                      f"{self.cutn} = {rate * self.cutn:,.1f} images/s = {rate * self.cutn / self.ceiling:.2f} "
                      f"of the ceiling |",
                      f"| bake at the ceiling: the guide's inner passes alone, nothing else | "
                      f"{self.ceiling * 3600 * self.bake.prompts / (self.cutn * self.bake.inner_steps * self.bake.meta_steps):,.1f} "
                      f"prompts/hour |"]
            if self.device.startswith("cuda"):
                lines.append(f"| bake / target of 300 prompts an hour (one H100) | {self.bake.per_hour() / 300:.2f} |")
        return "\n".join(lines)


def run_bench(model: str, device: str, prompts: list[int], size: int, cutn: int, steps: int,
              ceiling_batch: int, repeats: int = 1, log: Callable[[str], None] = print,
              compile: bool = False, bake_count: int | str = 0, bake=None, critic: str = "auto",
              steps_per_stage: int = 30) -> BenchResult:
    """Measure the ceiling, the inner loop at every P of `prompts` (as memory allows) and the original;
    with `bake_count` prompts (a number, or `auto`: what fits on CUDA, at most `BAKE_AUTO_LIMIT`), also a bake
    of that many prompts at `bake` (core.bake_settings.BakeSettings) and `steps_per_stage`."""
    clip = bench_clip(model, device)
    if compile:
        clip.compile_encoder()
    settings = RenderSettings(size=size, cutn=cutn)
    log(f"ceiling: batch {ceiling_batch} ...")
    ceiling = ceiling_rate(clip, ceiling_batch, repeats)
    rates: dict[int, float | None] = {}
    for count in prompts:
        log(f"inner loop: P={count} ...")
        rates[count] = None
        try:
            rates[count] = replay_rate(clip, count, settings, steps, repeats)
        except torch.cuda.OutOfMemoryError:
            log(f"inner loop: P={count} does not fit in memory")
        if rates[count] is None:  # outside the handler, whose traceback holds the failed batch's memory
            torch.cuda.empty_cache()
    log("original loop shape ...")
    original = original_rate(clip, settings, steps, repeats)
    staged, stages = _stage_settings(settings, steps)
    measured_steps = staged.steps_per_stage * stages  # whole stages: what the rates counted
    result = BenchResult(str(clip.device), clip.name, size, cutn, measured_steps, torch.get_num_threads(),
                         ceiling_batch, ceiling, original, rates)
    if bake_count and bake is not None:
        critic_clip = bench_critic(critic, clip)
        bake_render = replace(settings, steps_per_stage=steps_per_stage)
        count = bake_count
        if count == AUTO:
            count = resolve_batch_size(count, clip, bake_render, bake, BAKE_AUTO_LIMIT, log, critic_clip)
        log(f"bake: P={count}, {bake.stages} stages x {steps_per_stage} steps ...")
        result.bake = bake_rate(clip, critic_clip, count, bake_render, bake)
        result.bake_recipe = (f"{bake.stages}×{steps_per_stage} steps, {bake.meta_steps} meta-steps, "
                              f"starts {bake.starts}, unroll {bake.unroll}, {precision_of(clip.device)}")
    return result


def precision_of(device: torch.device) -> str:
    """What the renderer computes CLIP in on `device` (see `core.render.autocast_for`)."""
    return "bf16 autocast" if device.type == "cuda" else "fp32"


def bench_job(job: BenchJob) -> None:
    """bench.py: run the benchmark on the job's settings and print the markdown table."""
    check_batch(max(job.prompts), job.size)  # before anything is allocated (`core.limits`)
    if job.threads:
        torch.set_num_threads(job.threads)
    device = resolve_device(job.device)
    batch = job.ceiling_batch or (512 if device.type == "cuda" else 16)
    log = (lambda line: None) if job.quiet else (lambda line: print(line, flush=True))
    bake_count = job.bake_prompts
    if bake_count == "auto" and device.type != "cuda":
        log("bake: skipped on CPU (a default bake of ViT-B/32 takes hours there; use --bake-prompts N)")
        bake_count = 0
    result = run_bench(job.model, device, job.prompts, job.size, job.cutn, job.steps, batch, job.repeats, log,
                       compile=job.compile, bake_count=bake_count, bake=BakeSettings(stages=job.stages),
                       critic=job.critic, steps_per_stage=job.steps_per_stage)
    print(result.markdown())
