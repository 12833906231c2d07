"""Writing files safely: atomically (a reader sees the old file or the whole new one, never half), durably
(fsynced, rename included), and under new names that are reserved atomically (``name.png``, ``name-1.png``).

A full disk is a `DiskFull` error naming the file, and leaves nothing behind (no temporary file, no reserved
name); `check_writable_dir` finds an --out or --store that cannot be written before any work starts.

A leaf: every module that writes a file uses it; it imports only `core.errors`.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from core.errors import DiskFull, UserError, quote

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def write_atomically(target: str | os.PathLike, write: Callable[[BinaryIO], None], replace: bool = True) -> Path:
    """Write a file so that ``target`` is either absent/old or complete, never partial.

    ``write`` gets a binary file object for a temporary file in the same directory (a hidden
    ``.<name>.*.tmp``), which is flushed, fsynced and then renamed over ``target`` with
    ``os.replace``. With ``replace=False`` it is published with ``os.link`` instead, which fails with
    FileExistsError if ``target`` exists, however recently it appeared. On any error the temporary
    file is removed and the error re-raised.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise_if_disk_full(error, target)
        raise
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); a stored path or image is an ordinary file.
        os.chmod(tmp, 0o644)
        if replace:
            os.replace(tmp, target)
        else:
            _publish_new(tmp, target)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        raise_if_disk_full(error, target)  # torch.save reports it as a RuntimeError whose context is the OSError
        raise
    fsync_dir(target.parent)
    return target


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from or while handling, is "no space left" (or over quota)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
    return False


def raise_if_disk_full(error: BaseException, target: str | os.PathLike) -> None:
    """Raise `DiskFull` naming `target` if `error` is a full disk (the caller re-raises any other error)."""
    if is_disk_full(error):
        raise DiskFull(disk_full_message(error, target)) from None


def disk_full_message(error: BaseException, target: str | os.PathLike | None = None) -> str:
    """The one line of a full disk, naming the file being written (`target`, else the error's own)."""
    where = target if target is not None else getattr(error, "filename", None)
    return f"no space left on the device to write {where or 'a file'} (nothing partial was left)"


def check_writable_dir(directory: str | os.PathLike, option: str) -> None:
    """A UserError naming `directory` (given as `option`, e.g. --out) unless it is a folder this process can
    write in, or can be created in the nearest folder above it that exists. Run before any work, so a bad
    --out is not found when the work is done; it leaves nothing behind (a temporary file or folder it made
    to try is gone)."""
    path, directory = Path(directory), str(directory)
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not os.path.isdir(existing):
        raise UserError(f"{option} {quote(directory)} is not a folder ({quote(str(existing))} is a file)")
    try:
        if existing == path:
            with tempfile.TemporaryFile(dir=path):
                pass
        else:
            tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as error:
        raise_if_disk_full(error, path)
        raise UserError(f"{option} {quote(directory)}: cannot write there ({error.strerror or error})") from None


def write_text_atomically(target: str | os.PathLike, text: str) -> Path:
    """``write_atomically`` of a UTF-8 text."""
    return write_atomically(target, lambda handle: handle.write(text.encode("utf-8")))


def _publish_new(tmp: Path, target: Path) -> None:
    """Give the complete file ``tmp`` the name ``target`` unless that name exists (FileExistsError)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a narrow race remains)
        if os.path.lexists(target):
            raise FileExistsError(target) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); not possible (nor needed) on Windows."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- new names


def unique_path(directory: str | os.PathLike, stem: str, suffix: str = ".png") -> Path:
    """Reserve and return a new file ``stem.png``, ``stem-1.png``, ``stem-2.png``, ...

    The first free name is created empty with ``O_CREAT | O_EXCL``, which is atomic, so
    concurrent callers never get the same name. The caller then writes (or replaces) it.
    """
    def create_empty(candidate: Path) -> None:
        os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    return _reserve(Path(directory), stem, suffix, create_empty)


def unique_dir(parent: str | os.PathLike, stem: str) -> Path:
    """Create and return a new folder ``stem``, ``stem-1``, ... in ``parent``.

    ``mkdir`` fails if the folder exists, atomically, so two callers (even two processes at once)
    always get two folders.
    """
    return _reserve(Path(parent), stem, "", Path.mkdir)


def _reserve(directory: Path, stem: str, suffix: str, create) -> Path:
    """The first of ``stem+suffix``, ``stem-1+suffix``, ... in ``directory`` that ``create`` makes
    without raising FileExistsError."""
    if not stem or stem in (".", "..") or Path(stem).name != stem or "\0" in stem:
        raise ValueError(f"not a plain file stem: {stem!r}")
    directory.mkdir(parents=True, exist_ok=True)
    number = 0
    while True:
        candidate = directory / (f"{stem}{suffix}" if number == 0 else f"{stem}-{number}{suffix}")
        try:
            create(candidate)
        except FileExistsError:
            number += 1
            continue
        return candidate


def write_new(directory: str | os.PathLike, stem: str, suffix: str, write: Callable[[BinaryIO], None]) -> Path:
    """Reserve a new name (``unique_path``) and write the file atomically onto it; on failure free the
    name again. Never overwrites."""
    target = unique_path(directory, stem, suffix)
    try:
        write_atomically(target, write)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target
