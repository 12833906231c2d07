"""The toolkit reference, `docs/reference.md`, generated from the registries and the recipe keys
(`python -m core.reference` rewrites it; a test checks it is up to date).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from core import constraints, drawers, postproc, prompts, recipes, schedule, transforms
from core.errors import usage_status
from core.files import write_text_atomically
from core.registry import params_table

REFERENCE_PATH = Path(__file__).resolve().parent.parent / "docs" / "reference.md"

CONFIG_SYNTAX = """
A config list holds one entry per item, CLIPig style:

```yaml
- noise: 0.1                      # short form: the first parameter
- blur: 3 0.5                     # short form: the parameters in order (kernel_size, sigma)
- random_rotate:                  # mapping form: parameters by name
    degree: -10 10
    center: 0.3, 0.7
  start: 0%                       # scheduling beside the name (or inside the mapping)
  end: 50%
- flip                            # a bare name: all defaults
```

Lists may be YAML lists (`[0.3, 0.7]`) or strings of numbers separated by spaces and/or commas
(`0.3 0.7`, `0.3, 0.7`). When the first parameter takes a list, the whole short form is that list
(`noise: 0.1 0.2 0.3`).

A numeric parameter may be a ramp `[from, to]`, moved linearly from `from` at the start of the run
to `to` at its end: any pair that is not itself a valid value is a ramp, e.g. `mul: {factor: [0.2, 1]}`,
`noise: {std: [0.12, 0.02]}` (std takes 1 or 3 values, so a pair is a ramp); a parameter that takes
a pair, like `degree`, ramps with a pair of pairs: `degree: [[-30, 30], [-5, 5]]`. Integers are rounded.
"""


def reference_markdown() -> str:
    """The whole generated reference: value syntax, recipe keys, targets, and every registry."""
    parts = [
        "# Toolkit reference",
        "",
        "Generated from the registries by `python -m core.reference`; do not edit by hand.",
        "",
        "## Values and scheduling",
        "",
        inspect.cleandoc(CONFIG_SYNTAX),
        "",
        inspect.cleandoc(schedule.__doc__.split("\n", 2)[2]),
        "",
        "## Recipes",
        "",
        inspect.cleandoc(recipes.__doc__.split("\n", 2)[2]),
        "",
        params_table(recipes.RECIPE_PARAMS),
        "",
        "## Targets",
        "",
        inspect.cleandoc(prompts.__doc__.split("\n", 2)[2]),
        "",
        drawers.DRAWERS.markdown(),
        transforms.TRANSFORMS.markdown(),
        constraints.CONSTRAINTS.markdown(),
        postproc.POSTPROC.markdown(),
    ]
    return "\n".join(parts).rstrip() + "\n"


def write_reference(path: Path | str = REFERENCE_PATH) -> Path:
    """Write the generated reference to `path` (default `docs/reference.md`)."""
    return write_text_atomically(path, reference_markdown())


USAGE = "usage: python -m core.reference [FILE]   (writes the reference to FILE, default docs/reference.md)"


def main(args: list[str]) -> int:
    """Write the reference where `args` say; an option is never taken for a file name (`--help` prints usage)."""
    status = usage_status(args, USAGE, most=1)
    if status is not None:
        return status
    print(f"wrote {write_reference(args[0] if args else REFERENCE_PATH)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
