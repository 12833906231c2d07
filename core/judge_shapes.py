"""How well does each judge tell shapes apart, on clean drawings from each renderer?

For every shape it draws `n` one-object scenes (a large object in the centre, a random colour and
background) with the guide's renderer (`core/scenes.py`), the classifier's (`core/other_scenes.py`) and
`scenes-judge-3`'s (`core/third_scenes.py`), and asks each judge to pick the shape among captions that differ
only in it (`Judge.choose`). A judge that misreads clean drawings of a shape cannot be trusted to say whether
an optimised image shows it.

    python -m core.judge_shapes --judges scenes-judge,scenes-classifier --n 40
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from core import cli, other_scenes, scenes, third_scenes
from core.judges import load_judge

RENDERERS = ("scenes", "other_scenes", "third_scenes")  # in this order, so earlier tables reproduce
MAX_DRAWINGS = 1000  # per shape and renderer: 14,000 images of 48 px at most, under 400 MB


def drawings(renderer: str, shape: str, n: int, rng: np.random.Generator, size: int = 48
             ) -> tuple[torch.Tensor, list[str]]:
    """`n` images [n, 3, size, size] of one large `shape` in the centre, and their captions ("a red circle")."""
    images, captions = [], []
    for _ in range(n):
        colour = list(scenes.COLOURS)[int(rng.integers(len(scenes.COLOURS)))]
        if renderer in ("scenes", "third_scenes"):  # the guide's scenes, drawn by either renderer
            drawn = scenes.place_object(rng, colour, shape, "large", "center")
            background = list(scenes.BACKGROUNDS)[int(rng.integers(len(scenes.BACKGROUNDS)))]
            scene = scenes.Scene((drawn,), background)
            images.append(scenes.render_scene(scene, size) if renderer == "scenes"
                          else third_scenes.render(scene, size, rng))
        else:
            drawn = other_scenes.place(rng, colour, shape, "center")
            images.append(other_scenes.render(other_scenes.OtherScene((drawn,), other_scenes.sample_background(rng)),
                                              size))
        captions.append(scenes.with_article(f"{colour} {shape}"))
    return torch.stack(images), captions


def shape_accuracy(judge, n: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """{renderer: {shape: share of its drawings whose shape the judge picks}}."""
    rng = np.random.default_rng(seed)
    table = {}
    for renderer in RENDERERS:
        table[renderer] = {}
        for shape in scenes.SHAPES:
            images, captions = drawings(renderer, shape, n, rng)
            with torch.no_grad():
                picked = judge.choose(images, captions, "shape")
            table[renderer][shape] = float(np.mean([bool(value) for value in picked]))
    return table


def markdown(tables: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per judge and renderer, a column per shape and the mean."""
    rows = ["| judge | drawn by | " + " | ".join(scenes.SHAPES) + " | mean |",
            "|---" * (len(scenes.SHAPES) + 3) + "|"]
    for name, table in tables.items():
        for renderer, shares in table.items():
            cells = [f"{100 * shares[shape]:.0f} %" for shape in scenes.SHAPES]
            rows.append(f"| {name} | `{renderer}` | " + " | ".join(cells)
                        + f" | {100 * np.mean(list(shares.values())):.0f} % |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--judges", default="scenes-judge,scenes-classifier",
                        help="comma-separated judges (names or files, as evaluate.py's --judge)")
    parser.add_argument("--n", type=cli.int_in_range(1, MAX_DRAWINGS), default=40,
                        help="drawings per shape and renderer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawings")
    args = parser.parse_args()
    names = [name.strip() for name in args.judges.split(",") if name.strip()]
    print(markdown({name: shape_accuracy(load_judge(name), args.n, args.seed) for name in names}))


if __name__ == "__main__":
    cli.run(main)  # a judge that cannot be loaded: one line on stderr, no traceback
