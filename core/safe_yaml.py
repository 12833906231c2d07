"""Reading a user's YAML file (a recipe) without letting it exhaust the machine.

`yaml.safe_load` already runs no code, but a 1 KB file of nested aliases ("billion laughs") expands to
billions of items once anything walks it, and 20,000 nested brackets overflow the recursion. So here:
the file is read up to `limits.MAX_RECIPE_BYTES`, anchors and aliases (`&a`, `*a`, and the `<<` merges
they make) are refused, nesting is bounded by `limits.MAX_RECIPE_DEPTH`, and every problem is a
one-line `UserError` naming the file and line. `check_nesting` bounds a recipe from elsewhere (a path file)
the same way.
"""
from __future__ import annotations

import os
from typing import Any

import yaml

from core.errors import UserError
from core.limits import MAX_RECIPE_BYTES, MAX_RECIPE_DEPTH, MAX_RECIPE_ITEMS


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses anchors and aliases and nesting deeper than MAX_RECIPE_DEPTH."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (& and *) are not allowed",
                                              event.start_mark)
        self.depth += 1
        if self.depth > MAX_RECIPE_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_RECIPE_DEPTH} levels deep",
                                              event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_text(file: str | os.PathLike, limit: int = MAX_RECIPE_BYTES) -> str:
    """The UTF-8 text of `file` (a byte-order mark dropped), at most `limit` bytes; UserError otherwise."""
    try:
        with open(file, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise UserError(f"cannot read {file}: {error.strerror or error}") from None
    if len(data) > limit:
        raise UserError(f"{file} is larger than {limit // 1024} KB; a recipe is a short text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserError(f"{file} line {line} is not UTF-8 text") from None


def load_yaml(file: str | os.PathLike) -> Any:
    """The YAML document in `file` (None if empty), bounded as the module docstring says."""
    text = read_text(file)
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{file} is not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    except ValueError as error:  # e.g. an integer of more than 4,300 digits, which Python refuses to read
        raise UserError(f"{file} holds a value that cannot be read: {str(error).split(';')[0]}") from None


def check_nesting(value: Any, source: str) -> None:
    """UserError unless `value` (a recipe from any source: YAML, a path file) nests lists and dicts at most
    MAX_RECIPE_DEPTH deep and holds at most MAX_RECIPE_ITEMS items; walked without recursion."""
    pending, items = [(value, 1)], 0
    while pending:
        current, depth = pending.pop()
        if not isinstance(current, (dict, list, tuple)):
            continue
        if depth > MAX_RECIPE_DEPTH:
            raise UserError(f"{source}: nested more than {MAX_RECIPE_DEPTH} levels deep")
        children = list(current.values()) if isinstance(current, dict) else list(current)
        items += len(children)
        if items > MAX_RECIPE_ITEMS:
            raise UserError(f"{source}: more than {MAX_RECIPE_ITEMS} items")
        pending += [(child, depth + 1) for child in children]
