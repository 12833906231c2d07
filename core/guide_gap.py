"""Does a guide prefer a drawing of what a prompt says to what pixel optimisation makes of the prompt?

For seven one-object prompts ("a red circle", "a blue square", ...) it renders `normal` with a recipe, then
compares the guide's similarity to the prompt, averaged over the recipe's augmented views, of the optimised
image and of a clean drawing of the prompt (core/scenes.py, a large object in the centre on grey). A guide
that scores the optimised images far above the drawings is being fooled: its gradient draws what fools it,
not the shape (README, "The shipped scenes model").

    python -m core.guide_gap --model scenes --recipe quick
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch
import torch.nn.functional as F

from core import cli, scenes
from core.models import Clip, load_clip
from core.recipes import load_recipe
from core.render import Pipeline, RenderSettings, draw, random_start, replay

# One object per prompt, each colour and shape once, large and in the centre: nothing but shape and colour.
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "pink")


def one_object_scenes() -> list[tuple[str, scenes.Scene]]:
    """(prompt, the scene it describes) for each shape, with a colour of its own."""
    pairs = []
    for colour, shape in zip(COLOURS, scenes.SHAPES):
        drawn = scenes.SceneObject(colour, shape, "large", "center", (0.5, 0.5), 0.21)
        pairs.append((scenes.object_phrase(drawn), scenes.Scene((drawn,), "gray")))
    return pairs


def view_similarity(clip: Clip, images: torch.Tensor, embeddings: torch.Tensor, views, n_views: int,
                    seed: int = 1) -> torch.Tensor:
    """Mean cosine similarity [B] of `n_views` augmented views of each image to its embedding [B, D]."""
    generator = torch.Generator(device=clip.device).manual_seed(seed)
    with torch.no_grad():
        encoded = clip.encode_images(views(images.to(clip.device), 1.0, generator, n_views))
    encoded = F.normalize(encoded.view(images.shape[0], n_views, -1), dim=-1)
    return (encoded * embeddings[:, None]).sum(-1).mean(1)


def guide_gap(clip: Clip, settings: RenderSettings, stages: int, n_views: int, seed: int = 0) -> list[dict]:
    """A row per prompt: its guide similarity when optimised (`normal`) and when drawn."""
    pairs = one_object_scenes()
    prompts = [prompt for prompt, _ in pairs]
    embeddings = clip.encode_text(prompts)
    start = random_start(settings, [seed + index for index in range(len(prompts))], clip.device)
    optimised = draw(settings, replay(clip, embeddings[:, None].expand(-1, stages, -1), settings, start))
    drawn = torch.stack([scenes.render_scene(scene, settings.size) for _, scene in pairs])
    views = Pipeline.build(settings, clip).views  # the recipe's views, as the renderer builds them
    optimised_similarity = view_similarity(clip, optimised, embeddings, views, n_views)
    drawn_similarity = view_similarity(clip, drawn, embeddings, views, n_views)
    return [{"prompt": prompt, "optimised": float(a), "drawn": float(b)}
            for prompt, a, b in zip(prompts, optimised_similarity, drawn_similarity)]


def markdown(rows: list[dict]) -> str:
    """The rows as a table, with their means."""
    lines = ["| prompt | optimised | drawn |", "|---|---|---|"]
    lines += [f"| {row['prompt']} | {row['optimised']:.3f} | {row['drawn']:.3f} |" for row in rows]
    mean = {key: sum(row[key] for row in rows) / len(rows) for key in ("optimised", "drawn")}
    return "\n".join(lines + [f"| mean | {mean['optimised']:.3f} | {mean['drawn']:.3f} |"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="scenes", help="the guide: a scenes model name or file")
    parser.add_argument("--recipe", default="quick", help="recipe name or YAML file (its size, drawer, views)")
    parser.add_argument("--steps-per-stage", type=cli.int_at_least(1), default=10, help="steps of each stage")
    parser.add_argument("--cutn", type=cli.int_at_least(1), default=4, help="views per step while optimising")
    parser.add_argument("--views", type=cli.int_at_least(1), default=32, help="views the similarity is averaged over")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first prompt's start (the others follow)")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    settings = replace(RenderSettings.from_recipe(recipe), steps_per_stage=args.steps_per_stage, cutn=args.cutn)
    clip = load_clip(args.model, "cpu")
    print(markdown(guide_gap(clip, settings, recipe["stages"], args.views, args.seed)))


if __name__ == "__main__":
    cli.run(main)
