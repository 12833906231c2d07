"""The benchmark: how close the inner loop comes to the hardware's ceiling, and to the original tool.

Three measurements in one run, each the best of `repeats` timed runs after a short warm-up:

- the *ceiling*: CLIP's image encoder forward + backward w.r.t. its input (frozen weights) on a large
  batch, in images/s (bf16 autocast on CUDA, as the renderer uses);
- the project's inner loop, `core.render.replay`, on P prompts at once, in prompt-steps/s (P prompts
  advanced by one step = P prompt-steps; each step shows CLIP `cutn` views of every prompt);
- the original loop's shape: one prompt, fp32, a new `torch.optim.AdamW` every stage, one cutout a step.

Ratios: best P against the ceiling as (prompt-steps/s · cutn) / (images/s), the share of the
ceiling's CLIP throughput the loop gets (the rest goes to augmentations, the loss and Adam); best P
against the original as a plain speed-up. The default model is a random-init ViT-B/32 (same compute
as OpenAI's, no download).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from core.models import Clip
from core.render import Pipeline, RenderSettings, autocast_for, random_pixels, replay, to_image

VIT_B_32 = "vit-b-32"
STEPS_PER_STAGE = 10  # stage length of every measured loop (the original made a new AdamW each stage)


def bench_clip(name: str, device: str | torch.device = "auto") -> Clip:
    """The model to measure: `vit-b-32` (random init, ViT-B/32 architecture) or any `load_clip` name."""
    from core.models import load_clip, resolve_device

    if name != VIT_B_32:
        return load_clip(name, device)
    import clip

    device = device if isinstance(device, torch.device) else resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = clip.model.CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
    model = model.float().to(device).eval().requires_grad_(False)
    return Clip(model=model, name=VIT_B_32, embed_dim=512, image_size=224, device=device)


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
            embeddings = clip.encode_images(inputs)
        torch.autograd.grad(embeddings.float().square().sum(), inputs)

    run()  # warm-up: kernels, allocator
    return batch / best_seconds(run, clip.device, repeats)


def _targets(clip: Clip, prompts: int, stages: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    targets = torch.randn(prompts, stages, clip.embed_dim, generator=generator)
    return torch.nn.functional.normalize(targets, dim=-1).to(clip.device)


def _stage_settings(settings: RenderSettings, steps: int) -> tuple[RenderSettings, int]:
    per_stage = min(steps, STEPS_PER_STAGE)
    return replace(settings, steps_per_stage=per_stage), max(1, steps // per_stage)


def replay_rate(clip: Clip, prompts: int, settings: RenderSettings, steps: int, repeats: int = 1) -> float:
    """Prompt-steps/s of `core.render.replay` optimising `prompts` images at once for `steps` steps."""
    staged, stages = _stage_settings(settings, steps)
    targets = _targets(clip, prompts, stages)
    start = random_pixels(list(range(prompts)), settings.size, clip.device)
    pipeline = Pipeline.build(staged, clip)
    replay(clip, targets[:, :1], replace(staged, steps_per_stage=1), start,
           pipeline=pipeline)  # warm-up
    seconds = best_seconds(lambda: replay(clip, targets, staged, start, pipeline=pipeline), clip.device, repeats)
    return prompts * stages * staged.steps_per_stage / seconds


def sequential_rate(clip: Clip, runs: int, settings: RenderSettings, steps: int, repeats: int = 1) -> float:
    """Prompt-steps/s of `runs` one-prompt replays run one after another (what batching replaces)."""
    staged, stages = _stage_settings(settings, steps)
    targets = _targets(clip, runs, stages)
    starts = random_pixels(list(range(runs)), settings.size, clip.device)
    pipeline = Pipeline.build(staged, clip)
    replay(clip, targets[:1, :1], replace(staged, steps_per_stage=1), starts[:1],
           pipeline=pipeline)  # warm-up

    def run() -> None:
        for index in range(runs):
            replay(clip, targets[index:index + 1], staged, starts[index:index + 1], pipeline=pipeline)

    return runs * stages * staged.steps_per_stage / best_seconds(run, clip.device, repeats)


def original_rate(clip: Clip, settings: RenderSettings, steps: int, repeats: int = 1) -> float:
    """Steps/s of the original loop's shape: one prompt, fp32, a new AdamW each stage, one cutout a step."""
    from core.losses import range_penalty, spherical_distance, total_variation

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

    def best(self) -> tuple[int, float] | None:
        """(P, prompt-steps/s) of the fastest P that fitted."""
        measured = [(rate, prompts) for prompts, rate in self.rates.items() if rate is not None]
        if not measured:
            return None
        rate, prompts = max(measured)
        return prompts, rate

    def markdown(self) -> str:
        """The figures and their ratios as markdown tables."""
        precision = "bf16 autocast" if self.device.startswith("cuda") else "fp32"
        lines = [f"device {self.device} ({self.threads} CPU threads), model {self.model}, {self.size} px, "
                 f"cutn {self.cutn}, {self.steps} steps a run, torch {torch.__version__}", "",
                 "| what | setting | figure |", "|---|---|---|",
                 f"| ceiling: CLIP image forward+backward w.r.t. input, frozen weights | batch {self.ceiling_batch}, "
                 f"{precision} | {self.ceiling:,.1f} images/s |"]
        for prompts, rate in self.rates.items():
            figure = "out of memory" if rate is None else f"{rate:,.1f} prompt-steps/s"
            lines.append(f"| inner loop `core.render.replay` | P={prompts}, {precision}, {self.cutn} views | {figure} |")
        lines.append(f"| original loop shape | batch 1, fp32, new AdamW a stage, 1 cutout | {self.original:,.1f} steps/s |")
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
        return "\n".join(lines)


def run_bench(model: str, device: str, prompts: list[int], size: int, cutn: int, steps: int,
              ceiling_batch: int, repeats: int = 1, log: Callable[[str], None] = print) -> BenchResult:
    """Measure the ceiling, the inner loop at every P of `prompts` (as memory allows) and the original."""
    clip = bench_clip(model, device)
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
    return BenchResult(str(clip.device), clip.name, size, cutn, steps, torch.get_num_threads(), ceiling_batch,
                       ceiling, original, rates)


def counts_arg(text: str) -> list[int]:
    """argparse type of `--prompts`: `1,8,64` -> [1, 8, 64]."""
    import argparse

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers of prompts like 1,8,64, got '{text}'")
    return values


def bench_job(args) -> None:
    """bench.py: run the benchmark on the command line's settings and print the markdown table."""
    from core.models import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch = args.ceiling_batch or (512 if device.type == "cuda" else 16)
    log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    result = run_bench(args.model, device, args.prompts, args.size, args.cutn, args.steps, batch, args.repeats, log)
    print(result.markdown())
