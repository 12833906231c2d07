"""Scheduling: when a toolkit entry is active, and parameter values that change over a run.

Positions (`start`, `end`) may be written three ways:

* a float is a fraction of the run: `0.3`
* a string ending in `%` is a percentage: `"30%"`
* an int (or a string of digits) is a step: `120` or `"120"`

Note that `end: 1` is step 1, while `end: 1.0` is the end of the run.
An entry is active while `start <= progress < end`; an end at the end of the run
(`1.0`, `100%`, or the last step count) includes the very last step.

`progress` is `step / total_steps` in `[0, 1]`; steps are turned into fractions the same way,
so a step-based `start`/`end` needs the run's total step count, and one past it is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import UserError


Position = float | int  # float: fraction of the run, int: step


@dataclass(frozen=True)
class Ramp:
    """A parameter value moving linearly from `first` (progress 0) to `last` (progress 1).

    `first` and `last` are numbers or equally long tuples of numbers; `integer` rounds the result.
    """

    first: Any
    last: Any
    integer: bool = False


def parse_position(value: Any, name: str = "position") -> Position | None:
    """Read a `start`/`end` value: float fraction, "NN%" percent, or int step; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UserError(f"{name} must be a fraction (0.3), a percent (\"30%\") or a step (120), got {value!r}")
    if isinstance(value, int):
        position: Position = value
    elif isinstance(value, float):
        position = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                position = float(text[:-1]) / 100.0
            elif text.isdigit():
                position = int(text)
            else:
                position = float(text)
        except ValueError:
            raise UserError(
                f"{name} must be a fraction (0.3), a percent (\"30%\") or a step (120), got {value!r}"
            ) from None
    else:
        raise UserError(f"{name} must be a fraction (0.3), a percent (\"30%\") or a step (120), got {value!r}")
    if isinstance(position, float) and not 0.0 <= position <= 1.0:
        raise UserError(f"{name} {value!r} is outside the run (0..1 or 0%..100%)")
    if isinstance(position, int) and position < 0:
        raise UserError(f"{name} {value!r} is a negative step")
    return position


def position_fraction(value: Any, total_steps: int | None, default: float, name: str = "position") -> float:
    """Turn a `start`/`end` value into a fraction of the run; None gives `default`."""
    position = parse_position(value, name)
    if position is None:
        return default
    if isinstance(position, int):
        if not total_steps:
            raise UserError(f"{name} {value!r} is given in steps, but the total step count is unknown here")
        if position > total_steps:  # a step count written for a longer run: never reached
            raise UserError(f"{name} {value!r} is past the end of the run ({total_steps} steps); a fraction "
                            f"(0.5) or percent (\"50%\") scales with the run")
        return position / total_steps
    return position


def is_active(start: Any, end: Any, progress: float, total_steps: int | None = None) -> bool:
    """Whether an entry scheduled from `start` to `end` is active at `progress` (= step / total_steps)."""
    start_fraction = position_fraction(start, total_steps, 0.0, "start")
    end_fraction = position_fraction(end, total_steps, 1.0, "end")
    return fraction_active(start_fraction, end_fraction, progress)


def fraction_active(start_fraction: float, end_fraction: float, progress: float) -> bool:
    """`is_active` for positions already turned into fractions."""
    # An end at (or past) the end of the run keeps the last step active too.
    return start_fraction <= progress and (progress < end_fraction or end_fraction >= 1.0)


def value_at(value: Any, progress: float) -> Any:
    """The value of a parameter at `progress`: ramps are interpolated, other values returned as is."""
    if not isinstance(value, Ramp):
        return value
    weight = min(max(float(progress), 0.0), 1.0)

    def interpolate(first: float, last: float) -> float:
        mixed = first + (last - first) * weight
        return int(round(mixed)) if value.integer else mixed

    if isinstance(value.first, tuple):
        return tuple(interpolate(first, last) for first, last in zip(value.first, value.last))
    return interpolate(value.first, value.last)
