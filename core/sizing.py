"""How many prompts fit in one batched bake (`--batch-size auto`), and the one-line error that names a
batch size that fits when the GPU runs out of memory.

On CUDA, a probe bake (one meta-step, the run's real settings) at P = 1 and P = 2 measures peak memory;
memory grows linearly with P, so P = (free · (1 − headroom) − fixed) / per-prompt, with 20 % of the free
memory kept as headroom. On CPU memory is rarely the limit and throughput stops growing at small batches,
so `auto` is `CPU_BATCH_SIZE` (8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from core.bake import bake_prompts
from core.errors import UserError
from core.meta_loss import Critic

CPU_BATCH_SIZE = 8  # `--batch-size auto` on CPU: batching gains level off around here (see bench.py)
HEADROOM = 0.2  # share of free GPU memory `auto` leaves unused (allocator fragmentation, other processes)
AUTO = "auto"


# --- how many prompts fit ----------------------------------------------------------------------------

@dataclass
class MemoryEstimate:
    """Peak memory of a bake as fixed + per_prompt · P (bytes), and the free memory it was fitted to."""

    fixed: float
    per_prompt: float
    free: int
    fits: int

    def text(self) -> str:
        gib = 1024 ** 3
        return (f"{self.fits} prompts fit ({self.fixed / gib:.2f} GiB + {self.per_prompt / gib:.3f} GiB a prompt, "
                f"{1 - HEADROOM:.0%} of {self.free / gib:.1f} GiB free)")


_MEASURED: dict[tuple, MemoryEstimate] = {}  # per process: a Ray worker bakes many batches alike


def measure_batch_size(clip, settings, bake, critic_clip=None) -> MemoryEstimate | None:
    """How many prompts fit in one bake on the model's CUDA device (None on CPU: nothing to measure).

    Runs a probe bake at P = 1 and 2 and extrapolates peak memory linearly; `fits` is 0 when even one
    prompt does not fit. The probe has the run's shapes (size, views, stages, unroll, starts, held-out
    starts, the critic's model when the bake has one) but one meta-step and only `unroll` steps a stage:
    the other steps keep no autograd graph, so they add time, not memory.
    """
    device = clip.device
    if device.type != "cuda":
        return None
    key = (str(device), clip.name, repr(settings), repr(bake), critic_clip and critic_clip.name)
    if key in _MEASURED:
        return _MEASURED[key]
    probe = replace(bake, meta_steps=1)
    settings = replace(settings, steps_per_stage=max(1, min(settings.steps_per_stage, bake.unroll)))
    embedding = torch.nn.functional.normalize(torch.randn(1, clip.embed_dim, device=device), dim=-1)
    critic_embedding = None if critic_clip is None else torch.nn.functional.normalize(
        torch.randn(1, critic_clip.embed_dim, device=critic_clip.device), dim=-1)
    peaks = []
    for prompts in (1, 2):
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            critic = None if critic_clip is None else Critic(critic_clip, critic_embedding.repeat(prompts, 1),
                                                             bake.critic_weight)
            bake_prompts(clip, embedding.repeat(prompts, 1), settings, probe, list(range(prompts)), critic=critic)
        except torch.cuda.OutOfMemoryError:
            peaks.append(math.inf)  # memory is freed below, outside the handler that holds the traceback
            break
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    if len(peaks) < 2 or math.isinf(peaks[-1]):
        estimate = MemoryEstimate(peaks[0], peaks[0], free, 0 if math.isinf(peaks[0]) else 1)
    else:
        per_prompt = max(peaks[1] - peaks[0], 1.0)
        fixed = max(peaks[0] - per_prompt, 0.0)
        estimate = MemoryEstimate(fixed, per_prompt, free, max(0, int((free * (1 - HEADROOM) - fixed) // per_prompt)))
    _MEASURED[key] = estimate
    return estimate


def resolve_batch_size(batch_size: int | str, clip, settings, bake, prompts: int,
                       log=print, critic_clip=None) -> int:
    """The number of prompts per batched bake: `batch_size`, or for `auto` what fits (at most `prompts`)."""
    if batch_size != AUTO:
        return int(batch_size)
    estimate = measure_batch_size(clip, settings, bake, critic_clip)
    if estimate is None:
        size = CPU_BATCH_SIZE
        log(f"batch size auto: {size} on {clip.device.type} (the fixed CPU value)")
    else:
        if estimate.fits < 1:
            raise UserError(f"not even one prompt fits in {clip.device} at these settings "
                            f"(try a smaller --size, --cutn, --unroll or --starts)")
        size = estimate.fits
        log(f"batch size auto on {clip.device}: {estimate.text()}")
    return max(1, min(size, max(1, prompts)))


def oom_message(tried: int, clip, settings, bake, critic_clip=None) -> str:
    """The one-line error for a bake of `tried` prompts that ran out of GPU memory, naming a P that fits."""
    estimate = measure_batch_size(clip, settings, bake, critic_clip)
    where = clip.device
    if estimate is None:
        return f"out of memory baking {tried} prompts at once on {where} (try a smaller --batch-size)"
    if estimate.fits < 1:
        return (f"out of GPU memory baking {tried} prompts at once on {where}, and even 1 does not fit "
                f"(try a smaller --size, --cutn, --unroll or --starts)")
    # the probe can be optimistic (fragmentation, other processes): never suggest what just failed
    suggestion = estimate.fits if estimate.fits < tried else max(1, tried // 2)
    return (f"out of GPU memory baking {tried} prompts at once on {where}: about {suggestion} fit "
            f"(use --batch-size {suggestion}, or --batch-size auto)")
