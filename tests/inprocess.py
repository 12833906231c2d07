"""Running a top-level script's main() in this process, as `python script args` would from a folder, with
its exit status, stdout and stderr: fast enough for tables of hostile inputs and property-based tests."""
from __future__ import annotations

import contextlib
import io
import os
import runpy
import signal
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from conftest import REPO


@dataclass
class Ran:
    """What a run did: its exit status, stdout and stderr (and stderr's non-blank lines)."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.split("\n") if line.strip()]


@lru_cache(maxsize=None)
def _main_of(script: str):
    return runpy.run_path(str(REPO / script), run_name="in_process")["main"]


def run_in_process(script: str, args: list[str], cwd: Path) -> Ran:
    """Run `script` (e.g. "normal.py") with `args` in folder `cwd`; never raises SystemExit."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd, saved_handler = sys.argv, os.getcwd(), signal.getsignal(signal.SIGINT)
    sys.argv = [script, *args]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            _python_warning_filters()  # warnings reach stderr as in a real run, not pytest's record
            try:
                _main_of(script)()
                code = 0
            except SystemExit as exited:
                code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        signal.signal(signal.SIGINT, saved_handler)
    return Ran(code, out.getvalue(), err.getvalue())


def _python_warning_filters() -> None:
    """Python's own default warning filters, printing to the (redirected) stderr."""
    warnings.resetwarnings()
    for action, category in (("ignore", DeprecationWarning), ("ignore", PendingDeprecationWarning),
                             ("ignore", ImportWarning), ("ignore", ResourceWarning)):
        warnings.simplefilter(action, category)
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
        warnings.formatwarning(message, category, filename, lineno, line))


def files_under(root: Path) -> set[str]:
    """Every file and folder under `root`, relative to it."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def written_outside(root: Path, before: set[str], allowed: tuple[str, ...]) -> list[str]:
    """What appeared under `root` since `before` outside the `allowed` top-level folders."""
    return sorted(name for name in files_under(root) - before if Path(name).parts[0] not in allowed)
