"""Prompts from the command line: files of prompts (one a line, `#` comments) or the prompts themselves."""
from __future__ import annotations

import os

from core.errors import UserError, quote
from core.limits import MAX_PROMPT_FILE_BYTES, MAX_PROMPTS
from core.prompts import names_image_file

_BOM = b"\xef\xbb\xbf"


def read_prompts(items: list[str]) -> list[str]:
    """Prompts from arguments: a file of prompts (`read_prompt_file`) or a literal prompt each; repeats dropped."""
    prompts: list[str] = []
    for item in items:
        if os.path.isfile(item) and not names_image_file(item):  # os.path: no error for an over-long prompt
            prompts += read_prompt_file(item)
        else:
            prompts.append(item)
    prompts = list(dict.fromkeys(prompts))  # keep order, drop repeats
    if len(prompts) > MAX_PROMPTS:
        raise UserError(f"{len(prompts):,} prompts given; at most {MAX_PROMPTS:,} in one run")
    return prompts


def read_prompt_file(file: str | os.PathLike) -> list[str]:
    """The prompts of a UTF-8 text file, one a line.

    Lines end at a line feed (a carriage return before it dropped) and nowhere else, so a form feed or a
    U+2028 inside a prompt stays part of it; a byte-order mark at the start is dropped; a line whose first
    non-blank character is `#` is a comment, and a `#` later in a line is part of the prompt
    (`bubbles #digitalart`); blank lines are skipped and whitespace around a prompt stripped. A file that is
    not UTF-8 is a UserError naming the line.
    """
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_PROMPT_FILE_BYTES + 1)
    except OSError as error:
        raise UserError(f"cannot read the prompts file {quote(file)}: {error.strerror or error}") from None
    if len(data) > MAX_PROMPT_FILE_BYTES:
        raise UserError(f"prompts file {quote(file)} is larger than {MAX_PROMPT_FILE_BYTES // 2**20} MB")
    prompts = []
    for number, raw in enumerate(data.removeprefix(_BOM).split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").removesuffix("\r").strip()
        except UnicodeDecodeError:
            raise UserError(f"prompts file {quote(file)}, line {number}: not UTF-8 text") from None
        if line and not line.startswith("#"):
            prompts.append(line)
    return prompts
