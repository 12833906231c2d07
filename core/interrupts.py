"""Ctrl-C while a script starts: one line, no traceback.

A script's first import (torch, CLIP) takes seconds, before `core.cli.run` is there to turn Ctrl-C into
"interrupted"; `exit_on_interrupt` covers that time. It is the first thing each script runs, from a leaf
that imports nothing, and `core.cli.run` hands Ctrl-C back to Python (KeyboardInterrupt, so claims are
released) once the work starts.
"""
from __future__ import annotations

import os
import signal
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention


def _interrupted(signum, frame) -> None:
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)  # nothing has been written yet: nothing to clean up


def exit_on_interrupt(module_name: str) -> None:
    """Until `core.cli.run` starts the work, Ctrl-C prints "interrupted" and exits 130; only when the calling
    script runs as the program (`module_name` is `"__main__"`), not when a test imports it."""
    if module_name == "__main__":
        signal.signal(signal.SIGINT, _interrupted)
