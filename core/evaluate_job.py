"""evaluate.py's job: check the methods and models, bake the prompts the store lacks, then evaluate
(`core.evaluate`) and print the summary."""
from __future__ import annotations

import os

from core.auto import choose_mode
from core.baker import bake_many
from core.errors import UserError, cut
from core.evaluate import BY_VALUE_FILE, METHODS, evaluate
from core.files import check_writable_dir, unique_dir
from core.jobs import BakeJob, EvaluateJob
from core.judges import check_scene_prompts, load_judge
from core.critics import resolve_critic
from core.models import load_clip, model_name
from core.prompt_lists import read_prompts
from core.render import RenderSettings
from core.store import find_path, list_paths


def evaluate_job(job: EvaluateJob) -> None:
    """normal vs microwave vs auto_microwave at equal budget, scored by judges that did not guide."""
    unknown = [method for method in job.methods if method not in METHODS]
    if unknown or not job.methods:
        raise UserError(f"unknown method(s) {', '.join(unknown) or '(none given)'} in --methods; "
                        f"choose from {', '.join(METHODS)}")
    if not job.judges or len(set(job.judges)) != len(job.judges):
        raise UserError(f"--judge needs one or more different judges, got {cut(','.join(job.judges)) or '(none)'}")
    if not os.path.isfile(job.prompts_file):  # never read as a prompt itself
        raise UserError(f"prompts file not found: {cut(job.prompts_file)}")
    prompts = read_prompts([job.prompts_file])
    if not prompts:
        raise UserError(f"no prompts in {cut(job.prompts_file)}")
    check_scene_prompts(job.judges, prompts)
    recipe = job.recipe.resolve()
    check_writable_dir(job.run.out, "--out")
    clip = load_clip(job.run.model, job.run.device, job.run.compile)
    judges = [load_judge(name, job.run.device) for name in job.judges]
    critic = resolve_critic(job.bake.with_recipe(recipe).critic, clip)
    for judge in judges:
        if judge.name == clip.name:
            raise UserError(f"the judge must be another model than the guide ({clip.name})")
        if critic and model_name(critic) == judge.name:  # compared by name: no need to load the critic twice
            raise UserError(f"the judge ({judge.name}) must not also be the bake's critic: it would not be held out")
    bake_first(job, prompts)
    auto_mode, notice = job.auto_mode, None
    if "auto" in job.methods:
        auto_mode, notice = choose_mode(job.auto_mode, list_paths(job.run.store, clip.embed_dim), clip, recipe["stages"], prompts)
    if notice:
        print(notice)
    out_dir = unique_dir(job.run.out, "evaluation")
    evaluation = evaluate(clip, judges, prompts, RenderSettings.from_recipe(recipe), recipe["stages"], job.run.store,
                          job.seeds, job.methods, out_dir, k=job.k, path_weight=job.path_weight,
                          quiet=job.run.quiet, auto_mode=auto_mode)
    print(evaluation.summary_markdown())
    by_value = (f", {BY_VALUE_FILE} (accuracy by named shape, colour, place)" if (out_dir / BY_VALUE_FILE).exists()
                else "")
    print(f"images, results.csv{by_value} and index.html in {out_dir}")


def bake_first(job: EvaluateJob, prompts: list[str]) -> None:
    """Bake the evaluated prompts and those of `store_prompts` that the store lacks, when a method replays
    baked paths."""
    store_prompts = []
    if job.store_prompts:
        if not os.path.isfile(job.store_prompts):
            raise UserError(f"store prompts file not found: {cut(job.store_prompts)}")
        store_prompts = read_prompts([job.store_prompts])
    wanted = prompts + [prompt for prompt in store_prompts if prompt not in prompts]
    missing = [prompt for prompt in wanted if find_path(job.run.store, prompt) is None]
    if missing and {"microwave", "auto"} & set(job.methods):
        print(f"baking {len(missing)} prompt(s) missing from {job.run.store} first")
        bake = BakeJob(missing, run=job.run, recipe=job.recipe, bake=job.bake, batch_size=job.batch_size,
                       report=job.report, overwrite=False, skip_existing=True)
        summary = bake_many(bake)
        if summary.failed:
            raise UserError(f"could not bake {summary.failed[0][0]!r}: {summary.failed[0][1]}")
