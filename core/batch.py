"""Baking from the command line: `bake.py` and `batch_bake.py`, in batches of prompts.

`bake_many` encodes the prompts, bakes them a batch at a time (`core.bake.bake_prompts`), saves each
path as soon as its batch is done, and writes an HTML report per bake; `core.workers` runs it in
several processes or Ray tasks, sharing the prompts through the store's claim queue (`core.claims`).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from core.app import bake_settings, encode_target, resolve_recipe, target_label
from core.anchors import prompt_anchors
from core.bake import NEEDS_ANCHORS, BakeSettings, Critic, bake_prompts
from core.errors import UserError
from core.models import Clip, load_clip, resolve_critic
from core.prompts import names_image_file
from core.render import RenderSettings, random_pixels, replay, to_image
from core.tracking import tracker_for


def bake_job(args: argparse.Namespace) -> None:
    """Bake one prompt (or image) into a path in the store."""
    summary = bake_many([args.prompt], args, batch_size=1, skip_existing=False)
    if summary.failed:
        raise UserError(summary.failed[0][1])


@dataclass
class BatchSummary:
    """What a batch bake did: prompts baked, skipped (already in the store) and failed, and its batches.

    `batches` holds one (prompts, seconds, prompt-steps) triple per batched bake; `workers` is how many
    processes or Ray task slots shared the run (`merge` combines their summaries into one); `reports`
    maps each baked prompt to its HTML report, where one was written.
    """

    baked: list[str]
    skipped: list[str]
    failed: list[tuple[str, str]]
    seconds: float
    prompt_steps: int
    batches: tuple[tuple[int, float, int], ...] = ()
    workers: int = 1
    reports: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def batch_line(number: int, prompts: int, seconds: float, prompt_steps: int) -> str:
        """The line printed after each batched bake."""
        rate = prompt_steps / seconds if seconds else 0.0
        noun = "prompt" if prompts == 1 else "prompts"
        return f"batch {number}: {prompts} {noun}, {seconds:.1f} s, {rate:.1f} prompt-steps/s"

    def text(self) -> str:
        """The summary printed at the end: counts, wall time and overall rate, the batches, failures."""
        rate = self.prompt_steps / self.seconds if self.seconds else 0.0
        lines = [f"baked {len(self.baked)}, skipped {len(self.skipped)} (already in the store), "
                 f"failed {len(self.failed)}; {self.seconds:.1f} s, {rate:.1f} prompt-steps/s overall"]
        if self.batches:
            sizes = [prompts for prompts, _, _ in self.batches]
            rates = [steps / seconds for _, seconds, steps in self.batches if seconds > 0] or [0.0]
            busy = sum(seconds for _, seconds, _ in self.batches)
            size_range = f"{min(sizes)}" if min(sizes) == max(sizes) else f"{min(sizes)}-{max(sizes)}"
            noun = "prompt" if max(sizes) == 1 else "prompts"
            lines.append(f"  {len(self.batches)} batches of {size_range} {noun} on {self.workers} worker(s), "
                         f"{busy:.1f} s baking; per batch {min(rates):.1f} to {max(rates):.1f} prompt-steps/s")
        lines += [f"  failed: {prompt!r}: {reason}" for prompt, reason in self.failed]
        return "\n".join(lines)

    @classmethod
    def merge(cls, summaries: list["BatchSummary"], prompts: list[str], seconds: float, workers: int,
              unfinished_reason: str = "not baked") -> "BatchSummary":
        """One summary of several workers' runs over the same `prompts`, taking `seconds` of wall time.

        A prompt baked by one worker counts as baked even if another saw it already baked or failed on it;
        a prompt that no worker accounted for (its worker died) is failed with `unfinished_reason`.
        """
        baked = list(dict.fromkeys(prompt for summary in summaries for prompt in summary.baked))
        done = set(baked)
        failed: dict[str, str] = {}
        for summary in summaries:
            for prompt, reason in summary.failed:
                if prompt not in done:
                    failed.setdefault(prompt, reason)
        skipped = [prompt for prompt in dict.fromkeys(p for summary in summaries for p in summary.skipped)
                   if prompt not in done and prompt not in failed]
        accounted = done | set(failed) | set(skipped)
        for prompt in prompts:
            if prompt not in accounted:
                failed[prompt] = unfinished_reason
        return cls(baked, skipped, list(failed.items()), seconds,
                   sum(summary.prompt_steps for summary in summaries),
                   tuple(batch for summary in summaries for batch in summary.batches), workers,
                   {prompt: report for summary in summaries for prompt, report in summary.reports.items()})


def read_prompts(items: list[str]) -> list[str]:
    """Prompts from arguments: a file (one prompt a line, `#` comments, blanks skipped) or literal prompts."""
    prompts: list[str] = []
    for item in items:
        if Path(item).is_file() and not names_image_file(item):
            for line in Path(item).read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
                if line:
                    prompts.append(line)
        else:
            prompts.append(item)
    return list(dict.fromkeys(prompts))  # keep order, drop repeats


def bake_many(prompts: list[str], args: argparse.Namespace, batch_size: int | str = 1,
              skip_existing: bool = True, queue=None, log=print,
              clip: Clip | None = None, max_batches: int | None = None) -> BatchSummary:
    """Bake prompts in batches of `batch_size` (`auto`: as many as fit, see `core.workers`), saving each
    path as soon as its batch is done; prints a line per prompt and per batch.

    Prompts already in the store are skipped (so an interrupted batch resumes), a prompt that fails
    does not stop the others; running out of GPU memory stops the run with a UserError naming a batch
    size that fits. With a `core.claims.ClaimQueue` the batches are claimed from the store's shared
    queue (several workers share the list, each prompt is baked once), at most `max_batches` of them.
    A prompt's seed is `--seed` plus its position in `prompts`, whichever worker or batch bakes it.
    """
    from itertools import islice

    from core import workers
    from core.paths import BakedPath
    from core.store import find_path, save_path

    began = time.monotonic()
    clip = clip or load_clip(args.model, args.device, getattr(args, "compile", False))
    recipe = resolve_recipe(args)
    settings = RenderSettings.from_recipe(recipe)
    bake = bake_settings(recipe, args)
    recipe.update(stages=bake.stages, meta_steps=bake.meta_steps)
    bake.critic = resolve_critic(bake.critic, clip.name)  # path files record the model that scored
    critic_clip = load_clip(bake.critic, args.device) if bake.critic else None
    overwrite = getattr(args, "overwrite", False)
    todo, skipped, failed = _prompts_to_bake(prompts, clip, args, recipe, skip_existing, overwrite)
    baked = []

    def release(names: list[str]) -> None:
        if queue is not None:
            for name in names:
                queue.release(target_label(name))

    size = workers.resolve_batch_size(batch_size, clip, settings, bake, len(todo), log,
                                       critic_clip) if todo else 1
    if queue is None:
        batches = (todo[first:first + size] for first in range(0, len(todo), size))
    else:
        batches = queue.batches(todo, size, lambda item: target_label(item[1]))
    timings: list[tuple[int, float, int]] = []
    reports: dict[str, str] = {}  # prompt -> its bake report
    try:
        for batch in islice(batches, max_batches):
            names = [prompt for _, prompt, _ in batch]
            embeddings = torch.stack([embedding for _, _, embedding in batch])
            seeds = [args.seed + position for position, _, _ in batch]
            batch_began = time.monotonic()
            out_of_memory = False
            try:
                critic = None if critic_clip is None else Critic(
                    critic_clip, torch.stack([encode_target(critic_clip, name, args.truncate, recipe["targets"])
                                              for name in names]), bake.critic_weight)
                result = _bake_batch(clip, names, embeddings, settings, bake, seeds, args, critic)
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True  # handled below: this traceback still holds the batch's GPU memory
            except (UserError, RuntimeError) as error:
                failed += [(name, str(error).splitlines()[0]) for name in names]
                release(names)
                continue
            if out_of_memory:
                release(names)
                raise UserError(workers.oom_message(len(batch), clip, settings, bake, critic_clip))
            saved = []  # indexes in the batch of the paths now in the store
            for index, prompt in enumerate(names):
                if queue is not None and not queue.holds(target_label(prompt)):
                    log(f"not saving '{target_label(prompt)}': its claim expired and another worker took it")
                    continue
                path = BakedPath(prompt=target_label(prompt), guides=result.guides[index].cpu(),
                                 prompt_embedding=embeddings[index].cpu(), model_name=clip.name,
                                 embed_dim=clip.embed_dim, recipe=recipe,
                                 metrics=result.metrics(index))
                try:
                    file = save_path(args.store, path, overwrite=overwrite)
                except UserError as error:
                    failed.append((prompt, str(error)))
                else:
                    baked.append(prompt)
                    saved.append(index)
                    log(bake_log_line(prompt, result, index, file, settings, bake))
                release([prompt])
            steps = len(batch) * bake.meta_steps * bake.stages * settings.steps_per_stage * max(1, bake.starts)
            timings.append((len(batch), time.monotonic() - batch_began, steps))
            log(BatchSummary.batch_line(len(timings), *timings[-1]))
            if getattr(args, "report", False) and saved:  # after the timing: a report replays its path
                for index, report in zip(saved, write_bake_reports(clip, names, result, settings, seeds, recipe,
                                                                   args, saved)):
                    reports[names[index]] = str(report)
                    log(f"  report: {report}")
    finally:
        batches.close()  # a claim queue releases what it still holds
    if queue is not None:  # what is left was baked by other workers, or is left to them
        accounted = set(baked) | {prompt for prompt, _ in failed}
        skipped += [prompt for _, prompt, _ in todo
                    if prompt not in accounted and find_path(args.store, target_label(prompt)) is not None]
    return BatchSummary(baked, skipped, failed, time.monotonic() - began,
                        sum(steps for _, _, steps in timings), tuple(timings), reports=reports)


def _prompts_to_bake(prompts: list[str], clip: Clip, args: argparse.Namespace, recipe: dict, skip_existing: bool,
                     overwrite: bool) -> tuple[list[tuple[int, str, torch.Tensor]], list[str], list[tuple[str, str]]]:
    """Split `prompts` into those to bake, as (position in `prompts`, prompt, embedding), those skipped
    (already in the store) and those failed (already baked without --overwrite, or a bad prompt)."""
    from core.store import find_path

    todo, skipped, failed = [], [], []
    for position, prompt in enumerate(prompts):
        try:
            if find_path(args.store, target_label(prompt)) is not None and (skip_existing or not overwrite):
                if skip_existing:
                    skipped.append(prompt)
                    continue
                raise UserError(f"already baked: '{target_label(prompt)}' (use --overwrite to bake it again)")
            todo.append((position, prompt, encode_target(clip, prompt, args.truncate, recipe["targets"])))
        except UserError as error:
            failed.append((prompt, str(error)))
    return todo, skipped, failed


def stage_images(clip: Clip, guides: torch.Tensor, settings: RenderSettings, seeds: list[int]) -> list[list[torch.Tensor]]:
    """Replay guides [P,S,D] (one batch) and keep each prompt's image at the end of every stage."""
    snapshots: list[list[torch.Tensor]] = [[] for _ in seeds]

    def on_step(step: int, pixels: torch.Tensor, losses: torch.Tensor) -> None:
        if (step + 1) % settings.steps_per_stage == 0:
            for index, image in enumerate(to_image(pixels).clamp(0, 1).cpu()):
                snapshots[index].append(image)

    replay(clip, guides.to(clip.device), settings, random_pixels(seeds, settings.size, clip.device),
           view_seed=seeds[0], on_step=on_step)
    return snapshots


def write_bake_reports(clip: Clip, names: list[str], result, settings: RenderSettings, seeds: list[int],
                       recipe: dict, args: argparse.Namespace, indexes: list[int]) -> list[Path]:
    """An HTML report (images per stage, loss curves, GIF) in `<out>/reports/` for each prompt of the
    batch at `indexes`, in that order."""
    from core.images import save_gif
    from core.report import write_bake_report
    from core.slugs import slugify

    reports = []
    directory = Path(args.out) / "reports"
    guides, replay_seeds = result.guides[indexes], [seeds[index] for index in indexes]
    for index, stages in zip(indexes, stage_images(clip, guides, settings, replay_seeds)):
        prompt, metrics = names[index], result.metrics(index)
        gif = save_gif(stages, directory, f"bake-{slugify(target_label(prompt))}", upscale=4, duration_ms=300)
        report = write_bake_report(directory, target_label(prompt), stages, metrics["curve"],
                                   metrics["baked_loss"], metrics["normal_loss"], gif, stages[-1],
                                   {"model": clip.name, "seed": seeds[index], "recipe": recipe,
                                    "meta": metrics["meta"], "seconds": metrics["seconds"]})
        gif.unlink()  # the report keeps its own copy
        reports.append(report)
    return reports


def _bake_batch(clip: Clip, names: list[str], embeddings: torch.Tensor, settings: RenderSettings,
                bake: BakeSettings, seeds: list[int], args: argparse.Namespace, critic: Critic | None = None):
    from tqdm.auto import tqdm

    label = names[0][:30] if len(names) == 1 else f"{len(names)} prompts"
    bar = tqdm(total=bake.meta_steps, desc=f"bake {label}", disable=args.quiet, dynamic_ncols=True)
    with tracker_for(args, "bake", {"prompts": names, **asdict(bake), **asdict(settings)}) as tracker:
        def on_meta_step(step: int, point: dict) -> None:
            bar.update(1)
            loss = point.get("meta_loss")
            mean = sum(loss) / len(loss) if isinstance(loss, list) else loss
            bar.set_postfix(meta_loss=f"{mean:.4f}")
            tracker.log({"meta_loss": mean, "meta_step": step})

        anchors = prompt_anchors(clip, names, bake.anchor_words) if bake.meta in NEEDS_ANCHORS else None
        result = bake_prompts(clip, embeddings, settings, bake, seeds, view_seed=args.seed,
                              on_meta_step=on_meta_step, anchors=anchors, critic=critic)
    bar.close()
    return result


def bake_log_line(prompt: str, result, index: int, file: Path, settings: RenderSettings,
                  bake: BakeSettings) -> str:
    """The line a bake prints: the baked path's held-out loss beside a normal run of the same steps."""
    from core.report import verdict_of

    baked, normal = float(result.baked_loss[index]), float(result.normal_loss[index])
    verdict, change = verdict_of(baked, normal)
    steps = bake.stages * settings.steps_per_stage
    return (f"baked '{target_label(prompt)}' -> {file}\n"
            f"  final loss by {f'the critic {bake.critic}' if bake.critic else 'the guide'} on "
            f"{bake.eval_starts} held-out starts: baked path {baked:.4f} vs normal run "
            f"{normal:.4f} (same {steps} steps): {verdict} ({change:+.1f}%)")


def batch_bake_job(args: argparse.Namespace) -> int:
    """Bake a list of prompts, skipping those already baked, and print a summary.

    One process on `--device` by default, a worker process per GPU with `--gpus`, Ray tasks with `--ray`
    (`core.workers`); all of them claim each prompt in the store before baking it (`core.claims`), so
    runs sharing a store never bake a prompt twice and take over the prompts of a run that died.
    """
    from core import workers
    from core.claims import DEFAULT_TTL, ClaimQueue

    prompts = read_prompts(args.prompts)
    if not prompts:
        raise UserError("no prompts given (a file with one prompt per line, or prompts as arguments)")
    gpus, ray_address = getattr(args, "gpus", None), getattr(args, "ray", None)
    if gpus and ray_address:
        raise UserError("use either --gpus or --ray, not both")
    if ray_address:
        summary = workers.run_ray(prompts, args)
    elif gpus:
        summary = workers.run_workers(prompts, args, workers.parse_gpus(gpus))
    else:
        with ClaimQueue(args.store, ttl=getattr(args, "claim_ttl", DEFAULT_TTL)) as queue:
            summary = bake_many(prompts, args, batch_size=args.batch_size, skip_existing=True, queue=queue)
    print(summary.text())
    if args.report:
        print(f"batch report: {write_batch_summary_report(summary, args)}")
    return 1 if summary.failed else 0


def write_batch_summary_report(summary: BatchSummary, args: argparse.Namespace) -> Path:
    """One HTML page for a batch: a row per prompt with its losses and a link to its bake report."""
    from core.report import write_batch_report
    from core.paths import load_path
    from core.store import find_path

    directory = Path(args.out) / "reports"
    entries = []
    for status, prompts in (("baked", summary.baked), ("skipped", summary.skipped)):
        for prompt in prompts:
            entry = {"prompt": prompt, "status": status}
            file = find_path(args.store, target_label(prompt))
            if file is not None:
                metrics = load_path(file).metrics
                entry.update({key: metrics[key] for key in ("baked_loss", "normal_loss", "seconds") if key in metrics})
            if status == "baked" and prompt in summary.reports:
                entry["report"] = summary.reports[prompt]
            entries.append(entry)
    entries += [{"prompt": prompt, "status": "failed", "reason": reason} for prompt, reason in summary.failed]
    return write_batch_report(directory, entries)
