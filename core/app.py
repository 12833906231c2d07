"""The jobs behind the scripts: bake, microwave, auto_microwave, normal, batch_bake.

Each `*_job(args)` takes the parsed command line of its script and does the whole job; the loops
themselves live in `core.render` (inner) and `core.bake` (meta).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from core.bake import BakeSettings, bake_prompts
from core.cli import recipe_overrides
from core.errors import UserError
from core.models import Clip, load_clip
from core.render import ProgressReporter, RenderSettings, blend, from_image, random_pixels, replay, to_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# --- targets -----------------------------------------------------------------------------------------

def encode_target(clip: Clip, text: str, truncate: bool = False, extra: str = "") -> torch.Tensor:
    """The unit embedding [D] of a target: text, an image file, or weighted targets (`a:1 | b:-0.5`).

    `extra` (a recipe's `targets`) adds weighted targets to it.
    """
    from core.prompts import combine_targets, parse_targets

    if not text or not text.strip():
        raise UserError("empty prompt")
    if text.lower().endswith(IMAGE_SUFFIXES) and "|" not in text:
        if not Path(text).is_file():
            raise UserError(f"image file not found: {text}")
        if not extra:
            return clip.encode_image_files([text])[0]
    targets = parse_targets(f"{text} | {extra}" if extra else text)
    embeddings = []
    for target in targets:
        if target.kind == "image":
            embeddings.append(clip.encode_image_files([target.value])[0])
        else:
            embeddings.append(clip.encode_text([target.value], truncate)[0])
    combined = combine_targets(torch.stack(embeddings), torch.tensor([t.weight for t in targets]))
    return torch.nn.functional.normalize(combined.to(clip.device), dim=-1)


def target_label(text: str) -> str:
    """What a target is called in file names and logs (an image target by its file name)."""
    return Path(text).stem if text.lower().endswith(IMAGE_SUFFIXES) and "|" not in text else text.strip()


# --- recipes -----------------------------------------------------------------------------------------

def resolve_recipe(args: argparse.Namespace, base: dict | None = None) -> dict:
    """The recipe of a run: `--recipe` (or `base`, e.g. a path's own recipe), then command-line overrides."""
    from core.recipes import load_recipe, merge_overrides, validate_recipe

    recipe = dict(base) if base is not None else load_recipe(args.recipe)
    recipe = merge_overrides(recipe, recipe_overrides(args))
    validate_recipe(recipe)
    return recipe


def bake_settings(recipe: dict, args: argparse.Namespace) -> BakeSettings:
    """The meta part of a run from the recipe and the bake options on the command line."""
    settings = BakeSettings(**{key: recipe[key] for key in ("stages", "meta_steps") if key in recipe})
    for name in ("meta", "meta_lr", "unroll", "starts", "clip_grad", "prompt_pull", "eval_starts",
                 "population", "sigma", "trust_angle"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(settings, name, value)
    return settings


# --- rendering and saving ----------------------------------------------------------------------------

@dataclass
class Output:
    """Where and how a run's image is saved."""

    directory: str
    stem: str
    metadata: dict
    quantize: int = 0
    upscale: int = 4
    save_every: int = 0
    gif: bool = False
    init: str | None = None  # an image to start from instead of random pixels
    recipe_yaml: str = ""  # written beside the image so the result can be reproduced


def final_image(pixels: torch.Tensor, quantize: int) -> torch.Tensor:
    """Raw pixels [3,H,W] -> the saved image: clamped, optionally quantised to `quantize` levels."""
    from core.images import quantize as quantize_levels

    image = to_image(pixels).clamp(0, 1)
    return quantize_levels(image, quantize) if quantize else image


def render_and_save(clip: Clip, stage_targets: torch.Tensor, settings: RenderSettings, seed: int,
                    output: Output, quiet: bool = False, tracker=None) -> Path:
    """Replay stage targets [S, D] from the seed's random pixels and save the image (frames, GIF)."""
    from core.images import save_gif, save_png
    from core.store import write_atomically

    frames: list[torch.Tensor] = []
    total = stage_targets.shape[0] * settings.steps_per_stage
    progress = ProgressReporter(total, output.stem[:40], enabled=not quiet)

    def on_step(step: int, pixels: torch.Tensor, losses: torch.Tensor) -> None:
        progress(step, pixels, losses)
        if tracker is not None:
            tracker.log_step(step, losses)
        if output.save_every and (step + 1) % output.save_every == 0:
            frame = final_image(pixels[0].cpu(), output.quantize)
            frames.append(frame)
            save_png(frame, output.directory, f"{output.stem}-step{step + 1:05d}", output.metadata,
                     output.upscale)

    if output.init:
        from core.images import load_image

        start = from_image(load_image(output.init, settings.size))[None].to(clip.device)
    else:
        start = random_pixels([seed], settings.size, clip.device)
    pixels = replay(clip, stage_targets[None].to(clip.device), settings, start, view_seed=seed, on_step=on_step)
    progress.close()
    image = final_image(pixels[0].detach().cpu(), output.quantize)
    file = save_png(image, output.directory, output.stem, output.metadata, output.upscale)
    if output.recipe_yaml:
        write_atomically(file.with_suffix(".yaml"), lambda handle: handle.write(output.recipe_yaml.encode()))
    if output.gif and frames:
        save_gif(frames + [image], output.directory, output.stem, output.upscale, duration_ms=120)
    if tracker is not None:
        tracker.log_image("image", image)
    return file


def make_output(args: argparse.Namespace, method: str, label: str, clip: Clip, recipe: dict,
                extra: dict | None = None) -> Output:
    """The output settings of a run: file stem `<method>-<slug>` and the PNG metadata."""
    from core.recipes import recipe_to_yaml
    from core.store import slugify

    metadata = {"prompt": label, "method": method, "seed": args.seed, "model": clip.name,
                "recipe": json.dumps(recipe, sort_keys=True), **(extra or {})}
    if args.init:
        metadata["init"] = args.init
    return Output(args.out, f"{method}-{slugify(label)}", metadata, recipe.get("quantize") or 0,
                  args.upscale, args.save_every, args.gif, args.init, recipe_to_yaml(recipe))


def _tracker(args: argparse.Namespace, job: str, config: dict):
    from core.tracking import Tracker

    return Tracker(args.wandb, job, config)


# --- the jobs ----------------------------------------------------------------------------------------

def normal_job(args: argparse.Namespace) -> None:
    """Optimise straight toward the prompt: the control."""
    clip = load_clip(args.model, args.device, getattr(args, "compile", False))
    recipe = resolve_recipe(args)
    embedding = encode_target(clip, args.prompt, args.truncate, recipe.get("targets", ""))
    settings = RenderSettings.from_recipe(recipe)
    # the same total steps as a microwave of a path with the recipe's stages, unless --steps says otherwise
    settings.steps_per_stage = args.steps or recipe.get("stages", 10) * settings.steps_per_stage
    output = make_output(args, "normal", target_label(args.prompt), clip, {**recipe, "stages": 1,
                                                                         "steps_per_stage": settings.steps_per_stage})
    with _tracker(args, "normal", output.metadata) as tracker:
        file = render_and_save(clip, embedding[None], settings, args.seed, output, args.quiet, tracker)
    print(f"saved {file}")


def microwave_job(args: argparse.Namespace) -> None:
    """Replay a baked path, optionally blended with a new prompt."""
    from core.store import check_compatible, load_path

    clip = load_clip(args.model, args.device, getattr(args, "compile", False))
    path = load_path(args.path, device="cpu")
    check_compatible(path, clip.embed_dim, clip.name)
    recipe = resolve_recipe(args, base=_path_recipe(path, args))
    stage_targets = path.guides.to(clip.device)
    label = path.prompt
    if args.prompt:
        embedding = encode_target(clip, args.prompt, args.truncate, recipe.get("targets", ""))
        stage_targets = blend(stage_targets, embedding, args.mix)
        label = target_label(args.prompt)
    output = make_output(args, "microwave", label, clip, recipe, {"path": str(args.path), "path_prompt": path.prompt})
    with _tracker(args, "microwave", output.metadata) as tracker:
        file = render_and_save(clip, stage_targets, RenderSettings.from_recipe(recipe), args.seed, output,
                               args.quiet, tracker)
    print(f"saved {file}")


def _path_recipe(path, args: argparse.Namespace) -> dict:
    """A path's own recipe (legacy paths: the default recipe), unless --recipe names another."""
    from core.recipes import load_recipe

    if args.recipe != "default" or not path.recipe:
        return load_recipe(args.recipe)
    return {**load_recipe("default"), **path.recipe}


def auto_microwave_job(args: argparse.Namespace) -> None:
    """Blend the k baked paths nearest to a new prompt and replay the blend."""
    from core.store import nearest_paths

    clip = load_clip(args.model, args.device, getattr(args, "compile", False))
    recipe = resolve_recipe(args)
    embedding = encode_target(clip, args.prompt, args.truncate, recipe.get("targets", ""))
    exclude = [args.prompt] if args.leave_out else []
    nearest = nearest_paths(args.store, clip.name, lambda texts: clip.encode_text(texts, truncate=True),
                            embedding.cpu(), args.k, exclude_prompts=exclude)
    for path, distance in nearest:
        if path.embed_dim != clip.embed_dim:
            raise UserError(f"path '{path.prompt}' has embed dim {path.embed_dim}, model {clip.name} has "
                            f"{clip.embed_dim}")
        print(f"using '{path.prompt}' (distance {distance:.4f})")
    mixed = mix_paths([path.guides for path, _ in nearest], args.mode, args.seed)
    stage_targets = blend(mixed.to(clip.device), embedding, 1 - args.path_weight)
    recipe["stages"] = stage_targets.shape[0]
    output = make_output(args, f"auto-{args.mode}", target_label(args.prompt), clip, recipe,
                         {"paths": json.dumps([path.prompt for path, _ in nearest])})
    with _tracker(args, "auto_microwave", output.metadata) as tracker:
        file = render_and_save(clip, stage_targets, RenderSettings.from_recipe(recipe), args.seed, output,
                               args.quiet, tracker)
    print(f"saved {file}")


def mix_paths(guides: list[torch.Tensor], mode: str, seed: int) -> torch.Tensor:
    """One path [S, D] from k paths: `mean` per stage, or `splice` (each stage from a random path)."""
    stages = min(g.shape[0] for g in guides)
    stacked = torch.stack([torch.nn.functional.normalize(g[:stages].float(), dim=-1) for g in guides])
    if mode == "mean":
        return stacked.mean(dim=0)
    if mode == "splice":
        choice = torch.randint(len(guides), (stages,), generator=torch.Generator().manual_seed(seed))
        return stacked[choice, torch.arange(stages)]
    raise UserError(f"unknown mode '{mode}' (use mean or splice)")


def bake_job(args: argparse.Namespace) -> None:
    """Bake one prompt (or image) into a path in the store."""
    summary = bake_many([args.prompt], args, batch_size=1, skip_existing=False)
    if summary.failed:
        raise UserError(summary.failed[0][1])


@dataclass
class BatchSummary:
    """What a batch bake did: prompts baked, skipped (already in the store) and failed, and its batches.

    `batches` holds one (prompts, seconds, prompt-steps) triple per batched bake; `workers` is how many
    processes or Ray task slots shared the run (`merge` combines their summaries into one).
    """

    baked: list[str]
    skipped: list[str]
    failed: list[tuple[str, str]]
    seconds: float
    prompt_steps: int
    batches: tuple[tuple[int, float, int], ...] = ()
    workers: int = 1

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
                   tuple(batch for summary in summaries for batch in summary.batches), workers)


def read_prompts(items: list[str]) -> list[str]:
    """Prompts from arguments: a file (one prompt a line, `#` comments, blanks skipped) or literal prompts."""
    prompts: list[str] = []
    for item in items:
        if Path(item).is_file() and not item.lower().endswith(IMAGE_SUFFIXES):
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
    from core.store import BakedPath, find_path, save_path

    began = time.monotonic()
    clip = clip or load_clip(args.model, args.device, getattr(args, "compile", False))
    recipe = resolve_recipe(args)
    settings = RenderSettings.from_recipe(recipe)
    meta = bake_settings(recipe, args)
    recipe.update(stages=meta.stages, meta_steps=meta.meta_steps)
    overwrite = getattr(args, "overwrite", False)
    baked, skipped, failed = [], [], []
    todo: list[tuple[int, str, torch.Tensor]] = []  # (position in prompts, prompt, embedding)
    for position, prompt in enumerate(prompts):
        try:
            if find_path(args.store, target_label(prompt)) is not None and (skip_existing or not overwrite):
                if skip_existing:
                    skipped.append(prompt)
                    continue
                raise UserError(f"already baked: '{target_label(prompt)}' (use --overwrite to bake it again)")
            todo.append((position, prompt, encode_target(clip, prompt, args.truncate, recipe.get("targets", ""))))
        except UserError as error:
            failed.append((prompt, str(error)))

    def release(names: list[str]) -> None:
        if queue is not None:
            for name in names:
                queue.release(target_label(name))

    size = workers.resolve_batch_size(batch_size, clip, settings, meta, len(todo), log) if todo else 1
    if queue is None:
        batches = (todo[first:first + size] for first in range(0, len(todo), size))
    else:
        batches = queue.batches(todo, size, lambda item: target_label(item[1]))
    timings: list[tuple[int, float, int]] = []
    try:
        for batch in islice(batches, max_batches):
            names = [prompt for _, prompt, _ in batch]
            embeddings = torch.stack([embedding for _, _, embedding in batch])
            seeds = [args.seed + position for position, _, _ in batch]
            batch_began = time.monotonic()
            out_of_memory = False
            try:
                result = _bake_batch(clip, names, embeddings, settings, meta, seeds, args)
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True  # handled below: this traceback still holds the batch's GPU memory
            except (UserError, RuntimeError) as error:
                failed += [(name, str(error).splitlines()[0]) for name in names]
                release(names)
                continue
            if out_of_memory:
                release(names)
                raise UserError(workers.oom_message(len(batch), clip, settings, meta))
            for index, prompt in enumerate(names):
                if queue is not None and not queue.holds(target_label(prompt)):
                    log(f"not saving '{target_label(prompt)}': its claim expired and another worker took it")
                    continue
                path = BakedPath(prompt=target_label(prompt), guides=result.guides[index].cpu(),
                                 prompt_embedding=embeddings[index].cpu(), model_name=clip.name,
                                 embed_dim=clip.embed_dim, recipe=recipe,
                                 metrics=result.metrics(index),
                                 created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                try:
                    file = save_path(args.store, path, overwrite=overwrite)
                except UserError as error:
                    failed.append((prompt, str(error)))
                else:
                    baked.append(prompt)
                    log(bake_log_line(prompt, result, index, file, settings, meta))
                release([prompt])
            if getattr(args, "report", False):
                for report in write_bake_reports(clip, names, result, settings, seeds, recipe, args):
                    log(f"  report: {report}")
            steps = len(batch) * meta.meta_steps * meta.stages * settings.steps_per_stage * max(1, meta.starts)
            timings.append((len(batch), time.monotonic() - batch_began, steps))
            log(BatchSummary.batch_line(len(timings), *timings[-1]))
    finally:
        batches.close()  # a claim queue releases what it still holds
    if queue is not None:  # what is left was baked by other workers, or is left to them
        accounted = set(baked) | {prompt for prompt, _ in failed}
        skipped += [prompt for _, prompt, _ in todo
                    if prompt not in accounted and find_path(args.store, target_label(prompt)) is not None]
    return BatchSummary(baked, skipped, failed, time.monotonic() - began,
                        sum(steps for _, _, steps in timings), tuple(timings))


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
                       recipe: dict, args: argparse.Namespace) -> list[Path]:
    """An HTML report per baked prompt (images per stage, loss curves, GIF) in `<out>/reports/`."""
    from core.images import save_gif
    from core.report import write_bake_report
    from core.store import slugify

    reports = []
    directory = Path(args.out) / "reports"
    for index, (prompt, stages) in enumerate(zip(names, stage_images(clip, result.guides, settings, seeds))):
        metrics = result.metrics(index)
        gif = save_gif(stages, directory, f"bake-{slugify(target_label(prompt))}", upscale=4, duration_ms=300)
        report = write_bake_report(directory, target_label(prompt), stages, metrics["curve"],
                                   metrics["baked_loss"], metrics["normal_loss"], gif, stages[-1],
                                   {"model": clip.name, "seed": seeds[index], "recipe": recipe,
                                    "meta": metrics["meta"], "seconds": metrics["seconds"]})
        gif.unlink()  # the report keeps its own copy
        reports.append(report)
    return reports


def _bake_batch(clip: Clip, names: list[str], embeddings: torch.Tensor, settings: RenderSettings,
                meta: BakeSettings, seeds: list[int], args: argparse.Namespace):
    from tqdm.auto import tqdm

    label = names[0][:30] if len(names) == 1 else f"{len(names)} prompts"
    bar = tqdm(total=meta.meta_steps, desc=f"bake {label}", disable=args.quiet, dynamic_ncols=True)
    with _tracker(args, "bake", {"prompts": names, **asdict(meta), **asdict(settings)}) as tracker:
        def on_meta_step(step: int, point: dict) -> None:
            bar.update(1)
            loss = point.get("meta_loss")
            mean = sum(loss) / len(loss) if isinstance(loss, list) else loss
            bar.set_postfix(meta_loss=f"{mean:.4f}")
            tracker.log({"meta_loss": mean, "meta_step": step})

        result = bake_prompts(clip, embeddings, settings, meta, seeds, view_seed=args.seed,
                              on_meta_step=on_meta_step)
    bar.close()
    return result


def bake_log_line(prompt: str, result, index: int, file: Path, settings: RenderSettings,
                  meta: BakeSettings) -> str:
    """The line a bake prints: the baked path's held-out loss beside a normal run of the same steps."""
    baked, normal = float(result.baked_loss[index]), float(result.normal_loss[index])
    verdict = "baking paid off" if baked < normal else "baking did not pay off"
    change = (baked - normal) / normal * 100 if normal else 0.0
    steps = meta.stages * settings.steps_per_stage
    return (f"baked '{target_label(prompt)}' -> {file}\n"
            f"  final loss on {meta.eval_starts} held-out starts: baked path {baked:.4f} vs normal run "
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
    from core.store import find_path, load_path, slugify

    directory = Path(args.out) / "reports"
    entries = []
    for status, prompts in (("baked", summary.baked), ("skipped", summary.skipped)):
        for prompt in prompts:
            entry = {"prompt": prompt, "status": status}
            file = find_path(args.store, target_label(prompt))
            if file is not None:
                metrics = load_path(file).metrics
                entry.update({key: metrics[key] for key in ("baked_loss", "normal_loss", "seconds") if key in metrics})
            report = directory / slugify(target_label(prompt)) / "index.html"
            if status == "baked" and report.is_file():
                entry["report"] = str(report)
            entries.append(entry)
    entries += [{"prompt": prompt, "status": "failed", "reason": reason} for prompt, reason in summary.failed]
    return write_batch_report(directory, entries)


def evaluate_job(args: argparse.Namespace) -> None:
    """normal vs microwave vs auto_microwave at equal budget, scored by a judge that did not guide."""
    from core.evaluate import evaluate
    from core.store import find_path

    prompts = read_prompts([args.prompts_file])
    if not prompts:
        raise UserError(f"no prompts in {args.prompts_file}")
    clip = load_clip(args.model, args.device, getattr(args, "compile", False))
    judge = load_clip(args.judge, args.device)
    if judge.name == clip.name:
        raise UserError(f"the judge must be another model than the guide ({clip.name})")
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    recipe = resolve_recipe(args)
    missing = [prompt for prompt in prompts if find_path(args.store, prompt) is None]
    if missing and {"microwave", "auto"} & set(methods):
        print(f"baking {len(missing)} prompt(s) missing from {args.store} first")
        args.overwrite = False
        summary = bake_many(missing, args, batch_size=args.batch_size, skip_existing=True)
        if summary.failed:
            raise UserError(f"could not bake {summary.failed[0][0]!r}: {summary.failed[0][1]}")
    out_dir = _unique_dir(Path(args.out), "evaluation")
    evaluation = evaluate(clip, judge, prompts, RenderSettings.from_recipe(recipe), recipe["stages"], args.store,
                          args.seeds, methods, out_dir, k=args.k, path_weight=args.path_weight, quiet=args.quiet)
    print(evaluation.summary_markdown())
    print(f"images, results.csv and index.html in {out_dir}")


def _unique_dir(parent: Path, stem: str) -> Path:
    """A new directory `parent/stem`, `stem-1`, ... (never reusing one)."""
    parent.mkdir(parents=True, exist_ok=True)
    for number in range(10_000):
        candidate = parent / (stem if number == 0 else f"{stem}-{number}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UserError(f"too many {stem} directories in {parent}")
