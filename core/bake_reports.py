"""The HTML pages of baking: a report per baked prompt (its images at the end of every stage, loss curves,
a GIF; `core.report` writes the page) and one page for a batch, linking them."""
from __future__ import annotations

from pathlib import Path

import torch

from core.bake import BakeResult
from core.images import save_gif
from core.models import Clip
from core.paths import load_path
from core.render import RenderSettings, draw, random_start, replay
from core.report import write_bake_report, write_batch_report
from core.slugs import slugify
from core.store import find_path
from core.summary import BatchSummary
from core.targets import target_label


def stage_images(clip: Clip, guides: torch.Tensor, settings: RenderSettings,
                 seeds: list[int]) -> list[list[torch.Tensor]]:
    """Replay guides [P,S,D] (one batch) and keep each prompt's image at the end of every stage."""
    snapshots: list[list[torch.Tensor]] = [[] for _ in seeds]

    def on_step(step: int, pixels: torch.Tensor, losses: torch.Tensor) -> None:
        if (step + 1) % settings.steps_per_stage == 0:
            for index, image in enumerate(draw(settings, pixels).cpu()):
                snapshots[index].append(image)

    replay(clip, guides.to(clip.device), settings, random_start(settings, seeds, clip.device),
           view_seed=seeds[0], on_step=on_step)
    return snapshots


def write_bake_reports(clip: Clip, names: list[str], result: BakeResult, settings: RenderSettings,
                       seeds: list[int], recipe: dict, directory: Path, indexes: list[int]) -> list[Path]:
    """An HTML report (images per stage, loss curves, GIF) in `directory` for each prompt of the batch at
    `indexes`, in that order."""
    reports = []
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


def write_batch_summary_report(summary: BatchSummary, directory: Path, store: str) -> Path:
    """One HTML page for a batch in `directory`: a row per prompt with its losses and a link to its report."""
    entries = []
    for status, prompts in (("baked", summary.baked), ("skipped", summary.skipped)):
        for prompt in prompts:
            entry = {"prompt": prompt, "status": status}
            file = find_path(store, target_label(prompt))
            if file is not None:
                metrics = load_path(file).metrics
                entry.update({key: metrics[key] for key in ("baked_loss", "normal_loss", "seconds") if key in metrics})
            if status == "baked" and prompt in summary.reports:
                entry["report"] = summary.reports[prompt]
            entries.append(entry)
    entries += [{"prompt": prompt, "status": "failed", "reason": reason} for prompt, reason in summary.failed]
    return write_batch_report(directory, entries)
