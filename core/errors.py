"""The exception types for mistakes a user can make (bad prompt, missing file, full disk, ...), and how a
message that quotes user input stays one short line.

Scripts catch a `UserError`, print its message as one line on stderr and exit with status 2.
"""
from __future__ import annotations

import sys

QUOTE_LIMIT = 80  # characters of user input an error message quotes
LINE_LIMIT = 400  # characters of a whole error line


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""


class DiskFull(UserError):
    """No space left where a file was being written; nothing partial is left behind. Stops a whole run."""


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` for an error message as repr shows it (a text quoted, control characters and line breaks
    escaped), cut to about `limit` characters with its length given, so a 2 GB value never becomes a 2 GB
    message."""
    if not isinstance(value, str):
        shown = repr(value)
        return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(shown):,} characters)"
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def cut(text: object, limit: int = QUOTE_LIMIT) -> str:
    """`text` (a file name, say) as it is when short, else cut to about `limit` characters with its length."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def one_line(message: object, limit: int = LINE_LIMIT) -> str:
    """A message as one printable line: line breaks and other control characters escaped, cut to `limit`."""
    text = "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                   for char in str(message)[: limit * 4])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def usage_status(args: list[str], usage: str, most: int) -> int | None:
    """For a `python -m core.X` command that takes up to `most` plain arguments and no options: 0 after printing
    `usage` when `args` ask for help, 2 after printing it with one error line on stderr when they hold an option
    or too many arguments, None when the command may go on."""
    if args and args[0] in ("-h", "--help"):
        print(usage)
        return 0
    option = next((arg for arg in args if arg.startswith("-")), None)
    if option is None and len(args) <= most:
        return None
    problem = f"unknown option {option}" if option else f"unexpected argument {args[most]}"
    print(f"{usage}\nerror: {problem}", file=sys.stderr)
    return 2
