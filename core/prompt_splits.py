"""The held-out test prompts: a fixed rule that keeps them apart from every prompt a choice was made on.

`prompts/scenes.txt` and `prompts/scenes-store.txt` are the *tuning* set: defaults were chosen by looking
at results on them. The *test* set, `prompts/scenes-test.txt`, is made by this rule and nothing else, so
no choice can leak into it:

1. Enumerate every prompt of the three forms the tuning files use, over the scenes vocabulary
   (`core.scenes`): "a red circle" (one object), "a red circle on the left" (one object and its
   position, the canonical phrase of each of the five positions) and "a red circle to the left of a blue
   square" (two objects of different colours and a relation).
2. Drop every prompt that is in a tuning file.
3. Order each form's prompts by the SHA-256 of the prompt text (UTF-8), and take the first
   `PER_FORM` of each form, in that order, forms interleaved.

Words the shipped guide was never taught (white, heart, ...) are left out on purpose: the rule tests how
well the tool draws what its guide knows, not the guide's vocabulary.

    python -m core.prompt_splits            # rewrites prompts/scenes-test.txt (the same file every time)
"""
from __future__ import annotations

import hashlib
import sys
from itertools import product
from pathlib import Path

from core.errors import usage_status
from core.files import write_text_atomically
from core.scenes import COLOURS, POSITION_PHRASES, RELATIONS, SHAPES, with_article

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
TUNING_FILES = ("scenes.txt", "scenes-store.txt")
TEST_FILE = "scenes-test.txt"
PER_FORM = 16  # 48 test prompts: 16 of each form


def _phrase(colour: str, shape: str) -> str:
    """'a red circle', 'an orange square'."""
    return with_article(f"{colour} {shape}")


def prompt_forms() -> dict[str, list[str]]:
    """Every prompt of each form, by form name: one object, one object with its position, two objects."""
    objects = [_phrase(colour, shape) for colour, shape in product(COLOURS, SHAPES)]
    positioned = [f"{_phrase(colour, shape)} {phrases[0]}"
                  for colour, shape, phrases in product(COLOURS, SHAPES, POSITION_PHRASES.values())]
    related = [f"{_phrase(first_colour, first_shape)} {relation} {_phrase(second_colour, second_shape)}"
               for first_colour, first_shape, relation, second_colour, second_shape
               in product(COLOURS, SHAPES, RELATIONS, COLOURS, SHAPES) if first_colour != second_colour]
    return {"object": objects, "position": positioned, "relation": related}


def read_prompt_lines(file: Path) -> list[str]:
    """The prompts of a prompts file: one a line, lines starting with '#' and blank lines skipped."""
    lines = (line.strip() for line in file.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def tuning_prompts(directory: Path = PROMPTS_DIR) -> set[str]:
    """Every prompt of the tuning files."""
    return {prompt for name in TUNING_FILES for prompt in read_prompt_lines(directory / name)}


def _rank(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def held_out_prompts(directory: Path = PROMPTS_DIR, per_form: int = PER_FORM) -> list[str]:
    """The test set by the rule in the module docstring."""
    excluded = tuning_prompts(directory)
    chosen = [sorted((p for p in prompts if p not in excluded), key=_rank)[:per_form]
              for prompts in prompt_forms().values()]
    return [prompt for row in zip(*chosen) for prompt in row]


def held_out_file_text(directory: Path = PROMPTS_DIR) -> str:
    """The text of prompts/scenes-test.txt: a header saying where it comes from, then the prompts."""
    header = ("# The held-out TEST prompts: never tune or choose anything on them (see core/prompt_splits.py).\n"
              "# Made by `python -m core.prompt_splits`: every prompt of the tuning files' three forms over the\n"
              "# scenes vocabulary, minus the tuning prompts, ordered by SHA-256, the first 16 of each form.\n")
    return header + "\n".join(held_out_prompts(directory)) + "\n"


USAGE = "usage: python -m core.prompt_splits   (rewrites prompts/scenes-test.txt by the rule above; no options)"


def main(args: list[str]) -> int:
    """Write the test prompts; it takes no arguments (`--help` prints usage, anything else is exit 2)."""
    status = usage_status(args, USAGE, most=0)
    if status is not None:
        return status
    target = PROMPTS_DIR / TEST_FILE
    write_text_atomically(target, held_out_file_text())
    print(f"wrote {len(held_out_prompts())} test prompts to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
