"""Prompts from the command line: files of prompts (one a line, `#` comments) or the prompts themselves."""
from __future__ import annotations

from pathlib import Path

from core.prompts import names_image_file


def read_prompts(items: list[str]) -> list[str]:
    """Prompts from arguments: a file (one prompt a line, `#` comments, blanks skipped) or literal prompts."""
    prompts: list[str] = []
    for item in items:
        if Path(item).is_file() and not names_image_file(item):
            for line in Path(item).read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
                if line:
                    prompts.append(line)
        else:
            prompts.append(item)
    return list(dict.fromkeys(prompts))  # keep order, drop repeats
