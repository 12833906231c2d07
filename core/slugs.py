"""File names for prompts: ``slugify`` (a safe, distinct stem per prompt) and the original tool's names.

A leaf: the store, claims, reports and image files name things with it.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

from core.errors import UserError

_MAX_STEM = 80
_HASH_LEN = 8
# A prompt whose slug is just "spaces become underscores": lower-case ASCII, digits, '.', '-',
# spaces, starting with a letter or digit. Lower case only, so that two prompts differing only
# in case cannot collide on a case-insensitive file system (macOS, Windows).
_EXACT_PROMPT = re.compile(r"[a-z0-9][a-z0-9. -]*")
_HASH_SUFFIX = re.compile(r"-[0-9a-f]{%d}" % _HASH_LEN)
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9.-]+")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def slugify(prompt: str) -> str:
    """A safe, deterministic file stem for ``prompt``; distinct prompts get distinct stems.

    Rule: if the prompt is lower-case ASCII letters, digits, '.', '-' and spaces, starts with a
    letter or digit, has no '..', does not end in '.', is at most 80 characters, is not a
    Windows device name and does not itself end in '-' + 8 hex digits, the stem is the prompt
    with spaces replaced by '_' (reversible: '_' back to space). Otherwise the stem is a
    sanitised, shortened form of the prompt followed by '-' and the first 8 hex digits of
    sha1(prompt as UTF-8): accents folded to ASCII, every run of other characters (including
    '_' and spaces) replaced by one '_', runs of dots collapsed, leading '.', '_' and '-'
    stripped, cut to 70 characters, trailing '.', '_' and '-' stripped, 'prompt' if nothing is
    left, '_' prefixed to a Windows device name. The two forms can never be equal (only hashed
    stems end in '-' + 8 hex digits), so stems collide only if two sha1 prefixes do.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("the prompt is empty")
    if _is_exact(prompt):
        return prompt.replace(" ", "_")

    body = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii")
    body = _UNSAFE_RUN.sub("_", body)
    body = re.sub(r"\.{2,}", ".", body)
    body = body.lstrip("._-")
    # 10 = '-' + 8 hex digits + a possible '_' prefix for device names.
    body = body[: _MAX_STEM - _HASH_LEN - 2].rstrip("._-")
    if not body:
        body = "prompt"
    if _is_windows_reserved(body):
        body = "_" + body
    digest = hashlib.sha1(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    return f"{body}-{digest}"


def _is_exact(prompt: str) -> bool:
    return (
        len(prompt) <= _MAX_STEM
        and _EXACT_PROMPT.fullmatch(prompt) is not None
        and ".." not in prompt
        and not prompt.endswith(".")
        # Only hashed stems may end like a hash, which keeps the two forms apart.
        and _HASH_SUFFIX.search(prompt[-(_HASH_LEN + 1):]) is None
        and not _is_windows_reserved(prompt)
    )


def _is_windows_reserved(stem: str) -> bool:
    # Windows reserves the device names with any extension too ("nul.txt"), in any case.
    return stem.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED


def legacy_prompt(file: str | os.PathLike) -> str:
    """The prompt encoded in a legacy file's name: drop ``.pt``, '_' becomes a space."""
    name = Path(file).name
    if name.endswith(".pt"):
        name = name[: -len(".pt")]
    return name.replace("_", " ")


def legacy_file_name(prompt: str) -> str | None:
    """The name the original tool would have used for ``prompt``, or None if unsafe."""
    name = prompt.replace(" ", "_") + ".pt"
    if any(c in prompt for c in "/\\\0") or prompt.startswith("."):
        return None
    return name
