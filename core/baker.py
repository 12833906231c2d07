"""Baking in one process: bake a job's prompts a batch at a time (`core.bake.bake_prompts`), save each path
as soon as its batch is done, print a line per prompt and per batch, and write an HTML report per bake.

`bake_many` is what bake.py, batch_bake.py and evaluate.py's first bake run in this process, and what
each worker process and Ray task runs (`core.processes`, `core.ray_tasks`), sharing the prompts through
the store's claim queue (`core.claims`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from core.anchors import prompt_anchors
from core.bake import BakeResult, bake_prompts
from core.bake_reports import write_bake_reports
from core.bake_settings import BakeSettings
from core.claims import ClaimQueue
from core.errors import DiskFull, UserError
from core.files import check_writable_dir
from core.jobs import BakeJob
from core.limits import check_batch
from core.meta_loss import Critic, encode_contrast
from core.meta_optimisers import NEEDS_ANCHORS
from core.critics import resolve_critic
from core.models import Clip, load_clip
from core.paths import BakedPath
from core.render import RenderSettings
from core.report import change_text, verdict_of
from core.sizing import AUTO, oom_message, resolve_batch_size
from core.store import find_path, save_path
from core.summary import BatchSummary
from core.targets import encode_target, target_label
from core.tracking import Tracker

Todo = tuple[int, str, torch.Tensor]  # (position in the job's prompts, prompt, its embedding)


@dataclass
class Tally:
    """What a run has done so far: prompts baked and failed, one (prompts, seconds, prompt-steps) a batch,
    and the report of each baked prompt."""

    baked: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    timings: list[tuple[int, float, int]] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)


@dataclass
class Baker:
    """One process baking a job: its models, its resolved recipe and settings, where it logs, and the
    claim queue it shares with other workers (None: it bakes alone)."""

    job: BakeJob
    clip: Clip
    critic_clip: Clip | None
    recipe: dict
    settings: RenderSettings
    bake: BakeSettings
    log: Callable[[str], None] = print
    queue: ClaimQueue | None = None

    @classmethod
    def start(cls, job: BakeJob, log: Callable[[str], None] = print, queue: ClaimQueue | None = None,
              clip: Clip | None = None) -> "Baker":
        """Load the models (or use `clip`) and resolve the recipe; the critic is named in every path file."""
        clip = clip or load_clip(job.run.model, job.run.device, job.run.compile)
        recipe = job.recipe.resolve()
        bake = job.bake.with_recipe(recipe)
        bake = replace(bake, critic=resolve_critic(bake.critic, clip))  # path files record the model that scored
        critic_clip = load_clip(bake.critic, job.run.device) if bake.critic else None
        return cls(job, clip, critic_clip, recipe, RenderSettings.from_recipe(recipe), bake, log, queue)

    def release(self, names: list[str]) -> None:
        """Give up the claims on prompts (after a failure, or once saved)."""
        if self.queue is not None:
            for name in names:
                self.queue.release(target_label(name))

    def bake_batch(self, batch: list[Todo], tally: Tally) -> None:
        """Bake one batch, save its paths, log them, write their reports; a failure fails its prompts, running
        out of GPU memory stops the run with a UserError naming a batch size that fits."""
        names = [prompt for _, prompt, _ in batch]
        seeds = [self.job.run.seed + position for position, _, _ in batch]
        began = time.monotonic()
        out_of_memory = False
        try:
            result = self._bake(names, torch.stack([embedding for _, _, embedding in batch]), seeds)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True  # handled below: this traceback still holds the batch's GPU memory
        except (UserError, RuntimeError) as error:
            tally.failed += [(name, str(error).splitlines()[0]) for name in names]
            self.release(names)
            return
        if out_of_memory:
            self.release(names)
            raise UserError(oom_message(len(batch), self.clip, self.settings, self.bake, self.critic_clip))
        saved = self._save(batch, result, tally)
        steps = len(batch) * self.bake.meta_steps * self.bake.stages * self.settings.steps_per_stage * max(
            1, self.bake.starts)
        tally.timings.append((len(batch), time.monotonic() - began, steps))
        self.log(BatchSummary.batch_line(len(tally.timings), *tally.timings[-1]))
        if self.job.report and saved:  # after the timing: a report replays its path
            reports = write_bake_reports(self.clip, names, result, self.settings, seeds, self.recipe,
                                         Path(self.job.run.out) / "reports", saved)
            for index, report in zip(saved, reports):
                tally.reports[names[index]] = str(report)
                self.log(f"  report: {report}")

    def _critic(self, names: list[str]) -> Critic:
        """The critic of a batch: each prompt's target and, when it weighs anything, its contrast captions."""
        targets = torch.stack([encode_target(self.critic_clip, name, self.job.run.truncate, self.recipe["targets"])
                               for name in names])
        if self.bake.critic_contrast <= 0:
            return Critic(self.critic_clip, targets, self.bake.critic_weight)
        contrast, mask = encode_contrast(self.critic_clip, names)
        return Critic(self.critic_clip, targets, self.bake.critic_weight, contrast, mask, self.bake.critic_contrast)

    def _bake(self, names: list[str], embeddings: torch.Tensor, seeds: list[int]) -> BakeResult:
        """The batched bake itself, with a progress bar and wandb logging of the meta-loss."""
        critic = None if self.critic_clip is None else self._critic(names)
        label = names[0][:30] if len(names) == 1 else f"{len(names)} prompts"
        bar = tqdm(total=self.bake.meta_steps, desc=f"bake {label}", disable=self.job.run.quiet, dynamic_ncols=True)
        config = {"prompts": names, **asdict(self.bake), **asdict(self.settings)}
        with Tracker(self.job.run.wandb, "bake", config) as tracker:
            def on_meta_step(step: int, point: dict) -> None:
                bar.update(1)
                loss = point.get("meta_loss")
                mean = sum(loss) / len(loss) if isinstance(loss, list) else loss
                bar.set_postfix(meta_loss=f"{mean:.4f}")
                tracker.log({"meta_loss": mean, "meta_step": step})

            anchors = prompt_anchors(self.clip, names, self.bake.anchor_words) if self.bake.meta in NEEDS_ANCHORS \
                else None
            result = bake_prompts(self.clip, embeddings, self.settings, self.bake, seeds, view_seed=self.job.run.seed,
                                  on_meta_step=on_meta_step, anchors=anchors, critic=critic)
        bar.close()
        return result

    def _save(self, batch: list[Todo], result: BakeResult, tally: Tally) -> list[int]:
        """Save each baked path still ours to save; returns their indexes in the batch."""
        saved = []
        for index, (_, prompt, embedding) in enumerate(batch):
            if self.queue is not None and not self.queue.holds(target_label(prompt)):
                self.log(f"not saving '{target_label(prompt)}': its claim expired and another worker took it")
                continue
            path = BakedPath(prompt=target_label(prompt), guides=result.guides[index].cpu(),
                             prompt_embedding=embedding.cpu(), model_name=self.clip.name,
                             embed_dim=self.clip.embed_dim, recipe=self.recipe, metrics=result.metrics(index))
            try:
                file = save_path(self.job.run.store, path, overwrite=self.job.overwrite)
            except DiskFull:
                raise  # every later save would fail too: the run stops (its claims are released)
            except UserError as error:
                tally.failed.append((prompt, str(error)))
            else:
                tally.baked.append(prompt)
                saved.append(index)
                self.log(bake_log_line(prompt, result, index, file, self.settings, self.bake))
            self.release([prompt])
        return saved


def bake_many(job: BakeJob, queue: ClaimQueue | None = None, log: Callable[[str], None] = print,
              clip: Clip | None = None, max_batches: int | None = None) -> BatchSummary:
    """Bake the job's prompts in batches of `job.batch_size` (`auto`: as many as fit, see `core.sizing`),
    saving each path as soon as its batch is done; prints a line per prompt and per batch.

    Prompts already in the store are skipped with `job.skip_existing` (so an interrupted batch resumes),
    a prompt that fails does not stop the others; running out of GPU memory stops the run with a
    UserError naming a batch size that fits. With a `core.claims.ClaimQueue` the batches are claimed from
    the store's shared queue (several workers share the list, each prompt is baked once), at most
    `max_batches` of them. A prompt's seed is `--seed` plus its position in the job's prompts, whichever
    worker or batch bakes it.
    """
    began = time.monotonic()
    check_job(job)
    baker = Baker.start(job, log, queue, clip)
    todo, skipped, failed = prompts_to_bake(baker)
    tally = Tally(failed=failed)
    size = resolve_batch_size(job.batch_size, baker.clip, baker.settings, baker.bake, len(todo), log,
                              baker.critic_clip) if todo else 1
    bake = baker.bake
    check_batch(min(size, max(1, len(todo))), baker.settings.size, bake.starts, bake.eval_starts, bake.meta,
                bake.population)
    batches = _batches(todo, size, queue)
    try:
        for batch in islice(batches, max_batches):
            baker.bake_batch(batch, tally)
    finally:
        batches.close()  # a claim queue releases what it still holds
    if queue is not None:  # what is left was baked by other workers, or is left to them
        accounted = set(tally.baked) | {prompt for prompt, _ in tally.failed}
        skipped += [prompt for _, prompt, _ in todo
                    if prompt not in accounted and find_path(job.run.store, target_label(prompt)) is not None]
    return BatchSummary(tally.baked, skipped, tally.failed, time.monotonic() - began,
                        sum(steps for _, _, steps in tally.timings), tuple(tally.timings), reports=tally.reports)


def check_job(job: BakeJob) -> None:
    """What can be checked of a bake before any model is loaded: its recipe, the limits on a batch of the
    size asked for (`core.limits`), and that the store (and the reports' folder) can be written."""
    recipe = job.recipe.resolve()
    bake = job.bake.with_recipe(recipe)
    if job.batch_size != AUTO:
        check_batch(min(int(job.batch_size), max(1, len(job.prompts))), recipe["size"], bake.starts,
                    bake.eval_starts, bake.meta, bake.population)
    check_writable_dir(job.run.store, "--store")
    if job.report:
        check_writable_dir(Path(job.run.out) / "reports", "--out")


def _batches(todo: list[Todo], size: int, queue: ClaimQueue | None) -> Iterator[list[Todo]]:
    """Batches of up to `size` prompts: in order, or as claimed from the shared queue."""
    if queue is None:
        return (todo[first:first + size] for first in range(0, len(todo), size))
    return queue.batches(todo, size, lambda item: target_label(item[1]))


def prompts_to_bake(baker: Baker) -> tuple[list[Todo], list[str], list[tuple[str, str]]]:
    """Split the job's prompts into those to bake, as (position, prompt, embedding), those skipped (already
    in the store) and those failed (already baked without --overwrite, or a bad prompt)."""
    job = baker.job
    todo, skipped, failed = [], [], []
    labels: set[str] = set()
    for position, prompt in enumerate(job.prompts):
        try:
            if target_label(prompt) in labels:  # the same target twice (one image under two names)
                skipped.append(prompt)
                continue
            labels.add(target_label(prompt))
            if find_path(job.run.store, target_label(prompt)) is not None and (job.skip_existing or not job.overwrite):
                if job.skip_existing:
                    skipped.append(prompt)
                    continue
                raise UserError(f"already baked: '{target_label(prompt)}' (use --overwrite to bake it again)")
            embedding = encode_target(baker.clip, prompt, job.run.truncate, baker.recipe["targets"])
            todo.append((position, prompt, embedding))
        except UserError as error:
            failed.append((prompt, str(error)))
    return todo, skipped, failed


def scorer_label(bake: BakeSettings) -> str:
    """What scores a bake's final images: the guide, the critic, or a share of each (the meta-loss)."""
    if not bake.critic or bake.critic_weight <= 0:
        return "the guide"
    if bake.critic_weight >= 1:
        return f"the critic {bake.critic}"
    return f"{1 - bake.critic_weight:g} x the guide + {bake.critic_weight:g} x the critic {bake.critic}"


def bake_log_line(prompt: str, result: BakeResult, index: int, file: Path, settings: RenderSettings,
                  bake: BakeSettings) -> str:
    """The line a bake prints: the baked path's held-out loss beside a normal run of the same steps."""
    baked, normal = float(result.baked_loss[index]), float(result.normal_loss[index])
    verdict, change = verdict_of(baked, normal)
    steps = bake.stages * settings.steps_per_stage
    return (f"baked '{target_label(prompt)}' -> {file}\n"
            f"  final loss by {scorer_label(bake)} on "
            f"{bake.eval_starts} held-out starts: baked path {baked:.4f} vs normal run "
            f"{normal:.4f} (same {steps} steps): {verdict} ({change_text(change)})")
