"""auto_microwave's stage targets from the nearest baked paths (core.auto.auto_targets)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.auto import auto_targets
from core.errors import UserError
from core.paths import BakedPath


def _path(prompt: str, guides: torch.Tensor, prompt_embedding: torch.Tensor | None) -> BakedPath:
    return BakedPath(prompt, guides, prompt_embedding, "tiny", guides.shape[1])


def test_transfer_adds_the_mean_offset_of_the_paths(tiny_clip):
    first, second, new = F.normalize(torch.randn(3, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    shift = F.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)), dim=-1) * 0.2
    paths = [_path("one", F.normalize(first + shift, dim=-1), first),
             _path("two", F.normalize(second - shift, dim=-1), second)]
    targets = auto_targets(tiny_clip, paths, new, "transfer")
    offsets = (F.normalize(first + shift, dim=-1) - first + F.normalize(second - shift, dim=-1) - second) / 2
    assert torch.allclose(targets, F.normalize(new + offsets, dim=-1), atol=1e-6)
    # unbaked neighbours (every stage = their prompt) change nothing: the replay is a normal run
    unbaked = [_path("one", first.repeat(3, 1), first), _path("two", second.repeat(3, 1), second)]
    assert torch.allclose(auto_targets(tiny_clip, unbaked, new), new.repeat(3, 1), atol=1e-6)


def test_transfer_encodes_the_prompt_of_a_legacy_path(tiny_clip):
    own = tiny_clip.encode_text(["a lemon"])[0]
    legacy = _path("a lemon", own.repeat(2, 1), None)  # legacy files store no prompt embedding
    new = tiny_clip.encode_text(["a lime"])[0]
    assert torch.allclose(auto_targets(tiny_clip, [legacy], new), F.normalize(new, dim=-1).repeat(2, 1), atol=1e-5)


def test_mean_mixes_paths_with_the_prompt_and_unknown_modes_fail(tiny_clip):
    guides = F.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(2)), dim=-1)
    new = F.normalize(torch.randn(512, generator=torch.Generator().manual_seed(3)), dim=-1)
    targets = auto_targets(tiny_clip, [_path("one", guides, None)], new, "mean", path_weight=0.25)
    assert torch.allclose(targets, 0.25 * guides + 0.75 * new, atol=1e-6)
    with pytest.raises(UserError, match="unknown mode"):
        auto_targets(tiny_clip, [_path("one", guides, None)], new, "nope")



# --- predict: a ridge regression from the prompt embedding to the stage offsets ------------------------------

def test_ridge_recovers_a_known_linear_map_and_its_leave_one_out_error_is_exact():
    from core.ridge import fit_ridge

    generator = torch.Generator().manual_seed(4)
    inputs, weights, bias = torch.randn(60, 8, generator=generator), torch.randn(8, 5, generator=generator), \
        torch.randn(5, generator=generator)
    fit = fit_ridge(inputs, inputs @ weights + bias + 0.01 * torch.randn(60, 5, generator=generator))
    new = torch.randn(10, 8, generator=generator)
    assert torch.allclose(fit.predict(new), new @ weights + bias, atol=0.05)
    assert fit.penalty == min(fit.loo_errors, key=fit.loo_errors.get)
    # the closed-form leave-one-out error equals refitting without each example in turn
    inputs, targets = torch.randn(12, 20, generator=generator), torch.randn(12, 3, generator=generator)
    error = fit_ridge(inputs, targets, (0.7,)).loo_errors[0.7]
    refits = [fit_ridge(inputs[[j for j in range(12) if j != i]], targets[[j for j in range(12) if j != i]], (0.7,))
              for i in range(12)]
    by_refits = sum(float(((refit.predict(inputs[i]) - targets[i]) ** 2).sum()) for i, refit in enumerate(refits)) / 12
    assert error == pytest.approx(by_refits, rel=1e-6)
    # noise alone: the largest penalty, predicting the mean
    noise = fit_ridge(inputs, targets)
    assert noise.penalty == max(noise.loo_errors)
    with pytest.raises(ValueError, match="at least 2"):
        fit_ridge(inputs[:1], targets[:1])


def _linear_paths(count: int, stages: int = 3, seed: int = 5, model: str = "tiny"):
    """Paths whose offsets are a linear function of their prompt embeddings (which lie in a 6-dim subspace),
    and that function."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(512, 6, generator=generator)).Q.T  # [6, 512], orthonormal rows
    mixing = torch.randn(stages, 6, 6, generator=generator) * 0.05

    def offsets_of(embedding):
        return torch.einsum("sij,j->si", mixing, basis @ embedding) @ basis  # [S, 512]

    embeddings = F.normalize(torch.randn(count, 6, generator=generator) @ basis, dim=-1)
    paths = [BakedPath(f"prompt {index}", embedding + offsets_of(embedding), embedding, model, 512)
             for index, embedding in enumerate(embeddings)]
    return paths, basis, offsets_of


def test_predict_learns_the_offsets_from_the_paths(tiny_clip):
    paths, basis, offsets_of = _linear_paths(40)
    new = F.normalize(torch.randn(6, generator=torch.Generator().manual_seed(9)) @ basis, dim=-1)
    targets = auto_targets(tiny_clip, paths, new, "predict", path_weight=1.0)
    assert targets.shape == (3, 512) and torch.allclose(targets.norm(dim=-1), torch.ones(3), atol=1e-5)
    # the paths' offsets are what normalising (prompt + linear map) leaves: close to, not exactly, linear
    wanted = F.normalize(new + F.normalize(new + offsets_of(new), dim=-1) - new, dim=-1)
    assert torch.allclose(targets, wanted, atol=0.01)
    mean_offset = torch.stack([F.normalize(path.guides, dim=-1) - path.prompt_embedding for path in paths]).mean(0)
    assert (targets - wanted).norm() < 0.2 * (F.normalize(new + mean_offset, dim=-1) - wanted).norm()
    half, double = (auto_targets(tiny_clip, paths, new, "predict", path_weight=weight) for weight in (0.5, 2.0))
    assert (half - new).norm() < (targets - new).norm() < (double - new).norm()
    assert torch.equal(auto_targets(tiny_clip, paths, new, "predict"), targets)  # the default weight is 1


def test_predict_needs_two_paths_of_the_model_and_stage_count(tiny_clip):
    from core.auto import predict_paths

    paths, _, _ = _linear_paths(3)
    others, _, _ = _linear_paths(3, model="scenes")
    longer, _, _ = _linear_paths(4, stages=5)
    # the most common stage count among the model's paths; another model's paths never count
    assert predict_paths(paths[:2] + others + longer, tiny_clip) == longer
    assert predict_paths(paths[:2] + longer, tiny_clip, stages=3) == paths[:2]
    for few in ([paths[0]], paths[:1] + others, []):
        with pytest.raises(UserError, match="needs at least 2 baked paths of tiny") as caught:
            auto_targets(tiny_clip, few, paths[0].prompt_embedding, "predict")
        assert "\n" not in str(caught.value)


def test_evaluate_predict_leaves_the_prompt_out(tmp_path, tiny_clip):
    """evaluate's auto learns from every other path: the prompt's own, however odd, changes nothing."""
    from core.evaluate import method_targets
    from core.store import save_path

    paths, _, _ = _linear_paths(8)
    for path in paths:
        save_path(tmp_path, path)
    prompt = "a prompt of its own"
    embedding = tiny_clip.encode_text([prompt])
    expected = auto_targets(tiny_clip, paths, embedding[0], "predict")
    assert torch.allclose(method_targets("auto", tiny_clip, [prompt], embedding, 3, str(tmp_path),
                                         auto_mode="predict")[0], expected, atol=1e-6)
    save_path(tmp_path, BakedPath(prompt, -embedding[0].repeat(3, 1), embedding[0], "tiny", 512))
    assert torch.allclose(method_targets("auto", tiny_clip, [prompt], embedding, 3, str(tmp_path),
                                         auto_mode="predict")[0], expected, atol=1e-6)
    with pytest.raises(UserError, match="with 2 stages"):  # the evaluation's stage count, not the store's
        method_targets("auto", tiny_clip, [prompt], embedding, 2, str(tmp_path), auto_mode="predict")


def test_auto_microwave_predict_learns_from_the_store_and_leaves_the_prompt_out(tmp_path, capsys):
    from core.image_jobs import auto_microwave_job
    from core.jobs import AutoJob, ImageOptions, RunOptions
    from core.recipes import RecipeChoice
    from core.store import save_path

    paths, _, _ = _linear_paths(4)
    files = [save_path(tmp_path / "store", path) for path in paths]
    run = RunOptions(model="tiny", device="cpu", out=str(tmp_path / "out"), store=str(tmp_path / "store"), quiet=True)
    recipe = RecipeChoice("quick", {"size": 16, "steps_per_stage": 1, "cutn": 1})
    for leave_out, used in ((True, 3), (False, 4)):
        auto_microwave_job(AutoJob(paths[0].prompt, mode="predict", leave_out=leave_out, run=run, recipe=recipe,
                                   image=ImageOptions(upscale=1)))
        assert f"predicting the stage offsets from {used} baked paths of 3 stages" in capsys.readouterr().out
    # no mode chosen: predict where the store has 2 paths to learn from, transfer (with a notice) where not
    auto_microwave_job(AutoJob(paths[0].prompt, run=run, recipe=recipe, image=ImageOptions(upscale=1)))
    assert "predicting the stage offsets from 4" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("auto-predict-*.png"))) == 3
    for file in files[2:]:
        file.unlink()
    auto_microwave_job(AutoJob(paths[0].prompt, leave_out=True, run=run, recipe=recipe, image=ImageOptions(upscale=1)))
    printed = capsys.readouterr().out
    assert "the store has 1, so it transfers those of the nearest instead" in printed and "using 'prompt 1'" in printed
    assert len(list((tmp_path / "out").glob("auto-transfer-*.png"))) == 1


def test_choose_mode_leaves_each_evaluated_prompt_out(tiny_clip):
    from core.auto import choose_mode

    paths, _, _ = _linear_paths(3)
    assert choose_mode("mean", [], tiny_clip) == ("mean", None)
    assert choose_mode(None, paths, tiny_clip) == ("predict", None)
    assert choose_mode(None, paths, tiny_clip, 3, left_out=[path.prompt for path in paths]) == ("predict", None)
    mode, notice = choose_mode(None, paths, tiny_clip, 2)  # none of the evaluation's stage count
    assert mode == "transfer" and "the store has 0" in notice
    mode, notice = choose_mode(None, paths[:2], tiny_clip, left_out=[paths[0].prompt])
    assert mode == "transfer" and "the store has 1" in notice
