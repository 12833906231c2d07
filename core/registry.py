"""A small registry of named, documented, parameterised entries (transforms, constraints, post-processing).

Each entry is declared once, with its parameters (`Param`); the same declaration validates configs
(`Registry.configure`), prints `--help` lines (`help_text`) and its section of the markdown reference
(`markdown`; `core.reference` writes the whole of `docs/reference.md`, config syntax included).
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from core.errors import UserError, quote
from core.schedule import Ramp, fraction_active, position_fraction, value_at

SCHEDULE_KEYS = ("start", "end")
NUMERIC_KINDS = ("float", "int", "floats", "ints")


class _BadValue(Exception):
    """A value that does not fit a parameter; turned into a UserError with context by the caller."""


def split_list(raw: Any) -> list:
    """CLIPig-style list: a YAML list, or a string like "0.1 0.2 0.3" / "0.1, 0.2"; a scalar is a one-item list."""
    if isinstance(raw, (list, tuple)):
        return list(raw)
    if isinstance(raw, str):
        return [item for item in re.split(r"[\s,]+", raw.strip()) if item]
    return [raw]


def _number(raw: Any) -> float:
    if isinstance(raw, bool) or raw is None:
        raise _BadValue()
    if isinstance(raw, (int, float)):
        number = float(raw)
    elif isinstance(raw, str):
        try:
            number = float(raw.strip())
        except ValueError:
            raise _BadValue() from None
    else:
        raise _BadValue()
    if not math.isfinite(number):
        raise _BadValue()
    return number


def _integer(raw: Any) -> int:
    number = _number(raw)
    if number != int(number):
        raise _BadValue()
    return int(number)


@dataclass(frozen=True)
class Param:
    """One parameter of an entry.

    kind: `float`, `int`, `bool`, `text`, `floats` / `ints` (lists, lengths limited by `count`),
    `size` (int: pixels, float: multiple of the side of the image given to the chain), `list` (a list, kept
    as given, e.g. a config list) or `entry` (a registry entry: a name or {name: parameters}, kept as given).
    A default of None makes the parameter optional (None means "not given").
    """

    name: str
    default: Any
    doc: str
    kind: str = "float"
    count: tuple[int, ...] = ()
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def describe(self) -> str:
        """A short phrase for the expected value, used in errors and the reference."""
        if self.kind in ("floats", "ints"):
            noun = "numbers" if self.kind == "floats" else "integers"
            if self.count:
                return f"{' or '.join(str(count) for count in self.count)} {noun}"
            return f"a list of {noun}"
        return {
            "float": "a number",
            "int": "an integer",
            "bool": "true or false",
            "text": "one of " + ", ".join(self.choices) if self.choices else "text",
            "size": "pixels (int) or a multiple of the image side (float)",
            "list": "a list",
            "entry": "a name or {name: parameters}",
        }[self.kind]

    def parse(self, raw: Any, where: str) -> Any:
        """The parsed value of `raw` (tuples for lists, `Ramp` for a numeric `[from, to]` pair)."""
        if raw is None:
            return None
        try:
            return self._parse_plain(raw)
        except _BadValue:
            pass
        ramp = self._parse_ramp(raw)
        if ramp is not None:
            return ramp
        raise UserError(f"{where}: parameter '{self.name}' expects {self.describe()}{self.bounds_text()}, got {quote(raw)}")

    def _parse_plain(self, raw: Any) -> Any:
        if self.kind == "list":
            if not isinstance(raw, (list, tuple)):
                raise _BadValue()
            return list(raw)
        if self.kind == "entry":
            if not isinstance(raw, (str, dict)):
                raise _BadValue()
            return raw
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
                return raw.strip().lower() in ("true", "yes", "on")
            raise _BadValue()
        if self.kind == "text":
            if not isinstance(raw, str) or (self.choices and raw not in self.choices):
                raise _BadValue()
            return raw
        if self.kind == "size":
            # An int is pixels; a float is a multiple of the side of the chain's input image.
            if isinstance(raw, bool):
                raise _BadValue()
            if isinstance(raw, int) or (isinstance(raw, str) and raw.strip().isdigit()):
                value: Any = _integer(raw)
            else:
                value = _number(raw)
            if value <= 0:
                raise _BadValue()
            return value
        if self.kind in ("float", "int"):
            if isinstance(raw, (list, tuple)) or (isinstance(raw, str) and len(split_list(raw)) != 1):
                raise _BadValue()
            value = _integer(raw) if self.kind == "int" else _number(raw)
            self._check_bounds([value])
            return value
        if self.kind in ("floats", "ints"):
            items = split_list(raw)
            if any(isinstance(item, (list, tuple)) for item in items):
                raise _BadValue()
            convert = _integer if self.kind == "ints" else _number
            values = tuple(convert(item) for item in items)
            if not values or (self.count and len(values) not in self.count):
                raise _BadValue()
            self._check_bounds(values)
            return values
        raise ValueError(f"unknown parameter kind {self.kind!r}")

    def _parse_ramp(self, raw: Any) -> Ramp | None:
        # A value that is not a plain value but a pair of plain values is a ramp [from, to].
        if self.kind not in NUMERIC_KINDS:
            return None
        items = split_list(raw)
        if len(items) != 2:
            return None
        try:
            first, last = (self._parse_plain(item) for item in items)
        except _BadValue:
            return None
        if isinstance(first, tuple) and len(first) != len(last):
            return None
        return Ramp(first, last, integer=self.kind in ("int", "ints"))

    def _check_bounds(self, values) -> None:
        for value in values:
            if self.minimum is not None and value < self.minimum:
                raise _BadValue()
            if self.maximum is not None and value > self.maximum:
                raise _BadValue()

    def bounds_text(self) -> str:
        """", 0 to 1"-style suffix for the docs, or ""."""
        if self.minimum is not None and self.maximum is not None:
            return f", {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f", at least {self.minimum:g}"
        if self.maximum is not None:
            return f", at most {self.maximum:g}"
        return ""


def format_value(value: Any) -> str:
    """A value as a user would write it in YAML (lists space separated)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(f"{item:g}" if isinstance(item, float) else format_value(item) for item in value)
    if isinstance(value, float):
        text = f"{value:g}"
        # Keep floats recognisable: for sizes and positions 1.0 and 1 mean different things.
        return text if any(mark in text for mark in ".einf") else text + ".0"
    return str(value)


@dataclass(frozen=True)
class Entry:
    """A registered entry: its function, documentation and parameters."""

    name: str
    doc: str
    params: tuple[Param, ...]
    function: Callable
    info: dict = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The first line of the documentation."""
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""

    def param_names(self) -> list[str]:
        return [param.name for param in self.params]


@dataclass(frozen=True)
class Configured:
    """An entry with parsed parameter values (numbers, tuples or `Ramp`s) and its active window."""

    entry: Entry
    values: dict
    start: float = 0.0
    end: float = 1.0

    def active(self, progress: float) -> bool:
        """Whether the entry is scheduled at `progress` (0..1)."""
        return fraction_active(self.start, self.end, progress)

    def values_at(self, progress: float) -> dict:
        """Parameter values at `progress`, ramps interpolated."""
        return {name: value_at(value, progress) for name, value in self.values.items()}


class Registry:
    """Named entries of one kind (e.g. "transform"), declared with `@registry.register(Param(...), ...)`."""

    def __init__(self, kind: str, title: str, doc: str, common_params: tuple[Param, ...] = ()):
        self.kind = kind
        self.title = title
        self.doc = inspect.cleandoc(doc)
        # Parameters every entry of this registry takes (e.g. a constraint's weight), listed after its own.
        self.common_params = tuple(common_params)
        self.entries: dict[str, Entry] = {}

    def register(self, *params: Param, name: str | None = None, **info) -> Callable:
        """Decorator: declare the function as an entry; its docstring is the entry's documentation."""

        def declare(function: Callable) -> Callable:
            entry_name = name or function.__name__
            if entry_name in self.entries:
                raise ValueError(f"{self.kind} '{entry_name}' is declared twice")
            all_params = tuple(params) + self.common_params
            for param in all_params:  # a broken default is a programming error: fail at import
                param.parse(param.default, f"{self.kind} '{entry_name}' default")
            self.entries[entry_name] = Entry(
                entry_name, inspect.cleandoc(function.__doc__ or ""), all_params, function, dict(info)
            )
            return function

        return declare

    def names(self) -> list[str]:
        return sorted(self.entries)

    def entry(self, name: Any) -> Entry:
        """The entry called `name`; an unknown name is a UserError listing the valid ones."""
        if name not in self.entries:
            raise UserError(f"unknown {self.kind} {quote(name)}; valid: {', '.join(self.names())}")
        return self.entries[name]

    def configure(self, item: Any, total_steps: int | None = None) -> Configured:
        """Parse one config item (`{"noise": 0.1, "end": "50%"}`, `"flip"`, ...) into a `Configured`."""
        if isinstance(item, str):
            item = {item.strip(): None}
        if not isinstance(item, dict):
            raise UserError(f"a {self.kind} must be a name or a mapping like {{name: parameters}}, got {quote(item)}")
        names = [key for key in item if key not in SCHEDULE_KEYS]
        known = [key for key in names if key in self.entries]
        if len(names) > 1 and len(known) == 1:  # most likely a misspelt start/end
            other = next(key for key in names if key != known[0])
            raise UserError(
                f"{self.kind} '{known[0]}': unknown key {quote(other)} beside the name; valid: {', '.join(SCHEDULE_KEYS)}"
            )
        if len(names) != 1:
            raise UserError(
                f"each {self.kind} item names exactly one {self.kind}, got {names or 'none'} "
                f"(valid: {', '.join(self.names())})"
            )
        entry = self.entry(names[0])
        raw = item[names[0]]
        where = f"{self.kind} '{entry.name}'"
        schedule = {key: item[key] for key in SCHEDULE_KEYS if key in item}
        given, inner_schedule = self._given_values(entry, raw, where)
        for key, value in inner_schedule.items():
            if key in schedule:
                raise UserError(f"{where}: '{key}' is given twice")
            schedule[key] = value
        unknown = [key for key in given if key not in entry.param_names()]
        if unknown:
            raise UserError(
                f"{where}: unknown parameter {quote(unknown[0])}; valid: {', '.join(entry.param_names()) or 'none'}"
            )
        values = {}
        for param in entry.params:
            given_value = given.get(param.name)
            values[param.name] = param.parse(param.default if given_value is None else given_value, where)
        start = position_fraction(schedule.get("start"), total_steps, 0.0, f"{where} start")
        end = position_fraction(schedule.get("end"), total_steps, 1.0, f"{where} end")
        if start > end:
            raise UserError(f"{where}: start {schedule.get('start')!r} is after end {schedule.get('end')!r}")
        return Configured(entry, values, start, end)

    def _given_values(self, entry: Entry, raw: Any, where: str) -> tuple[dict, dict]:
        """The parameters as given by name (mapping form as is, short form filled in order), and the
        scheduling keys found among them (`start`/`end` may also sit inside the mapping)."""
        if raw is None:
            return {}, {}
        if isinstance(raw, dict):
            given = dict(raw)
            schedule = {key: given.pop(key) for key in SCHEDULE_KEYS if key in given}
            return given, schedule
        if not entry.params:
            raise UserError(f"{where} takes no parameters, got {quote(raw)}")
        first = entry.params[0]
        if first.kind in ("floats", "ints", "list"):
            return {first.name: raw}, {}
        items = split_list(raw)
        own_params = entry.params[: len(entry.params) - len(self.common_params)] or entry.params
        if len(items) > len(own_params):
            raise UserError(
                f"{where}: {quote(raw)} has more values than parameters ({', '.join(p.name for p in own_params)})"
            )
        return {param.name: item for param, item in zip(own_params, items)}, {}

    def configure_list(self, config: Any, total_steps: int | None = None) -> list[Configured]:
        """Parse a config list (None or [] is empty)."""
        if config is None:
            return []
        if not isinstance(config, (list, tuple)):
            raise UserError(f"the {self.kind} config must be a list of items, got {quote(config)}")
        return [self.configure(item, total_steps) for item in config]

    def help_text(self) -> str:
        """One line per entry: name, parameters with defaults, summary."""
        lines = []
        for name in self.names():
            entry = self.entries[name]
            params = ", ".join(f"{param.name}={format_value(param.default)}" for param in entry.params)
            lines.append(f"{name}({params}): {entry.summary}")
        return "\n".join(lines)

    def markdown(self, level: int = 2) -> str:
        """The registry as a markdown section: its doc, then each entry with a parameter table."""
        heading = "#" * level
        parts = [f"{heading} {self.title}", "", self.doc, ""]
        for name in self.names():
            entry = self.entries[name]
            parts += [f"{heading}# `{name}`", "", entry.doc, ""]
            if entry.params:
                parts += [params_table(entry.params), ""]
        return "\n".join(parts)


def params_table(params) -> str:
    """A markdown table of parameters: name, default, expected value, description."""
    rows = ["| parameter | default | value | description |", "|---|---|---|---|"]
    for param in params:
        if param.kind == "list":
            default = yaml.safe_dump(param.default, default_flow_style=True, width=10**6).strip()
        else:
            default = format_value(param.default)
        rows.append(
            f"| `{param.name}` | `{_cell(default)}` | {_cell(param.describe() + param.bounds_text())} "
            f"| {_cell(param.doc)} |"
        )
    return "\n".join(rows)


def _cell(text: str) -> str:
    """Text for a markdown table cell: a bare `|` would end the cell."""
    return text.replace("|", "\\|")
