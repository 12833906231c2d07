"""The claim queue: workers sharing a store bake every prompt once, and a dead worker's prompts again.

A prompt is *claimed* by creating `<store>/.claims/<slug>.claim` with `O_CREAT | O_EXCL` (atomic on local
file systems and NFS v3+), so of two claimers exactly one wins. The file holds JSON: the worker id, host,
pid, pid namespace, claim time and a random token. Its modification time is the *heartbeat*: a thread of
the claiming worker touches it every `ttl / 4` seconds while it bakes.

A claim is *expired* when its heartbeat is older than `ttl` seconds (the worker died or hangs), or at once
when its process no longer exists on this host (same host name and pid namespace). An expired claim is
taken over by one worker at a time (it holds `<slug>.claim.takeover`, created exclusively), which renames
the claim away, checks it is still the one judged expired, and claims afresh. The worker that lost a claim
(it was too slow to beat) notices at its next heartbeat or before saving, and does not save.

Workers claim first and then check the store: a prompt baked and released meanwhile is then seen as
baked, never baked twice. Store writes are atomic (`core.files.write_atomically`), so a killed worker
leaves nothing half-written, only a claim that expires.

Clocks: heartbeats are written with the claimer's clock and compared with the reader's, so hosts sharing a
store need clocks that agree to well within the TTL (NTP does), and the TTL should exceed the file
system's attribute cache time (NFS: `acregmax`, 60 s by default).
"""
from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from core.errors import UserError
from core.files import raise_if_disk_full
from core.slugs import slugify
from core.store import find_path

CLAIMS_DIR = ".claims"
DEFAULT_TTL = 120.0  # seconds without a heartbeat after which a claim is dead
TAKEOVER_TTL = 30.0  # a take-over takes milliseconds: a lock this old belongs to a taker that died

Item = TypeVar("Item")


@dataclass
class Claim:
    """One claim file's contents; `heartbeat` is the file's modification time when it was read."""

    label: str
    worker: str
    host: str
    pid: int
    pidns: str
    claimed: float
    token: str
    heartbeat: float = 0.0
    inode: int = 0

    def describe(self, now: float | None = None) -> str:
        """`worker on host (pid), heartbeat N s ago`, for logs."""
        age = (now or time.time()) - self.heartbeat
        who = f"{self.worker or 'a worker'} on {self.host or 'an unknown host'} (pid {self.pid or '?'})"
        return f"{who}, heartbeat {age:.0f} s ago"


def _pid_namespace() -> str:
    # Two containers may share a host name but not their process ids: a pid is only checked within one.
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def worker_id(rank: int | str | None = None) -> str:
    """A readable id for this process: `host-pid` (and the rank among its siblings, if given)."""
    base = f"{socket.gethostname()}-{os.getpid()}"
    return base if rank is None else f"{base}-{rank}"


def claims_dir(store: str | os.PathLike) -> Path:
    """Where the claims of a store live (hidden, so the store's listings ignore it)."""
    return Path(store) / CLAIMS_DIR


def claim_file(store: str | os.PathLike, label: str) -> Path:
    """The claim file of a prompt: the prompt's store slug, so claims and paths correspond one to one."""
    return claims_dir(store) / f"{slugify(label)}.claim"


def read_claim(file: Path) -> Claim | None:
    """The claim in `file`, None if there is none. A file still being written reads as an anonymous claim
    whose heartbeat is its modification time (so it expires like any other if its writer died)."""
    try:
        with open(file, "rb") as handle:
            stat = os.fstat(handle.fileno())
            raw = handle.read()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
        claim = Claim(**{key: data[key] for key in ("label", "worker", "host", "pid", "pidns", "claimed", "token")})
    except (ValueError, KeyError, TypeError):
        claim = Claim(label="", worker="", host="", pid=0, pidns="", claimed=stat.st_mtime, token="")
    claim.heartbeat = stat.st_mtime
    claim.inode = stat.st_ino
    return claim


def _process_gone(claim: Claim) -> bool:
    if not claim.pid or claim.host != socket.gethostname() or not claim.pidns or claim.pidns != _pid_namespace():
        return False
    try:
        os.kill(claim.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def is_expired(claim: Claim, ttl: float, now: float | None = None) -> bool:
    """True when the claim's heartbeat is older than `ttl` s, or its process is gone from this host."""
    now = time.time() if now is None else now
    return now - claim.heartbeat > ttl or _process_gone(claim)


def _take_over(file: Path, stale: Claim) -> bool:
    """Remove the expired claim `stale` from `file`; False if another worker is taking it over, or it changed.

    Takers first create `<file>.takeover` exclusively, so they never interleave, and under it check that
    the file still holds the claim judged expired: a slow taker must not move away the fresh claim a faster
    one has just written (while it was away, a third worker could claim too). Then the claim is renamed
    away (atomic) and checked once more; if its owner renewed it meanwhile, it is put back with `link`
    (which never replaces a file).
    """
    lock = file.with_name(f"{file.name}.takeover")
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        try:
            if time.time() - lock.stat().st_mtime > TAKEOVER_TTL:  # its taker died mid-way
                lock.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        return False
    try:
        return _move_away_if_unchanged(file, stale)
    finally:
        lock.unlink(missing_ok=True)


def _move_away_if_unchanged(file: Path, stale: Claim) -> bool:
    """Under the take-over lock: remove `file` if it still holds `stale`; False (file as it was) if not."""
    def unchanged(claim: Claim | None) -> bool:
        return claim is not None and (claim.token, claim.inode, claim.heartbeat) == (stale.token, stale.inode,
                                                                                     stale.heartbeat)

    # Another taker may have claimed afresh since `stale` was read: leave that claim alone, not even
    # moving it for a moment (someone could create a second claim while it is away).
    if not unchanged(read_claim(file)):
        return False
    private = file.with_name(f"{file.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(file, private)
    except FileNotFoundError:
        return False
    if unchanged(read_claim(private)):
        private.unlink(missing_ok=True)
        return True
    try:
        os.link(private, file)
    except FileExistsError:
        pass  # a newer claim is there already; the displaced owner sees its claim lost at its next beat
    private.unlink(missing_ok=True)
    return False


def try_claim(store: str | os.PathLike, label: str, worker: str, ttl: float = DEFAULT_TTL) -> Claim | None:
    """Claim the prompt `label` for `worker`: the new claim, or None while someone else's is live."""
    file = claim_file(store, label)
    if os.path.islink(file.parent):  # never create claims (or anything) outside the store
        raise UserError(f"{file.parent} is a symlink; the claims must be a folder inside the store")
    file.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a claim that vanished or expired under our eyes: try again, a few times
        now = time.time()
        claim = Claim(label=label, worker=worker, host=socket.gethostname(), pid=os.getpid(),
                      pidns=_pid_namespace(), claimed=now, token=uuid.uuid4().hex)
        try:
            descriptor = os.open(file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            existing = read_claim(file)
            if existing is not None and not is_expired(existing, ttl):
                return None
            if existing is not None and not _take_over(file, existing):
                return None
            continue
        stat = _write_claim(file, descriptor, claim, now)
        claim.heartbeat, claim.inode = stat.st_mtime, stat.st_ino
        return claim
    return None


def _write_claim(file: Path, descriptor: int, claim: Claim, now: float) -> os.stat_result:
    """Write a claim into the file just created; if that fails (a full disk), leave no empty or half claim."""
    fields = {key: value for key, value in asdict(claim).items() if key not in ("heartbeat", "inode")}
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(fields, handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.utime(handle.fileno(), (now, now))  # through the descriptor: the file is ours, whatever its name
            return os.fstat(handle.fileno())
    except BaseException as error:
        file.unlink(missing_ok=True)  # ours: created with O_EXCL a moment ago
        raise_if_disk_full(error, file)
        raise


def still_holds(store: str | os.PathLike, claim: Claim) -> bool:
    """True while `claim` is still the one in its file (not expired and taken over by someone else)."""
    current = read_claim(claim_file(store, claim.label))
    return current is not None and current.token == claim.token


def refresh(store: str | os.PathLike, claim: Claim) -> bool:
    """The heartbeat: touch the claim file; False (and nothing touched) if the claim was lost."""
    if not still_holds(store, claim):
        return False
    now = time.time()
    try:
        os.utime(claim_file(store, claim.label), (now, now))
    except FileNotFoundError:
        return False
    claim.heartbeat = now
    return True


def release_claim(store: str | os.PathLike, claim: Claim) -> None:
    """Remove `claim` if it is still ours (a lost claim belongs to its new owner and stays)."""
    if still_holds(store, claim):
        claim_file(store, claim.label).unlink(missing_ok=True)


class ClaimQueue:
    """A worker's view of the shared queue: claims batches of prompts, beats their hearts, releases them.

    `workers` is how many workers share the list: a worker claims at most its share of what is left, so
    a short list is spread over the workers instead of going whole to the first one to start.
    """

    def __init__(self, store: str | os.PathLike, worker: str | None = None, ttl: float = DEFAULT_TTL,
                 workers: int = 1, log: Callable[[str], None] = print):
        if not math.isfinite(ttl) or ttl <= 0:  # nan would never expire a claim
            raise UserError(f"--claim-ttl must be a positive number of seconds, got {ttl}")
        self.store = Path(store)
        self.worker = worker or worker_id()
        self.ttl = float(ttl)
        self.workers = max(1, int(workers))
        self.log = log
        self.held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    # --- claims ---

    def claim(self, label: str) -> bool:
        """Claim one prompt; True if it is now ours."""
        claim = try_claim(self.store, label, self.worker, self.ttl)
        if claim is None:
            return False
        with self._lock:
            self.held[label] = claim
        self._start_heartbeat()
        return True

    def holds(self, label: str) -> bool:
        """True if the prompt's claim is still ours (checked on disk: call it right before saving)."""
        with self._lock:
            claim = self.held.get(label)
        return claim is not None and still_holds(self.store, claim)

    def release(self, label: str) -> None:
        """Give up the claim of a prompt (baked, failed, or not to be baked after all)."""
        with self._lock:
            claim = self.held.pop(label, None)
        if claim is not None:
            release_claim(self.store, claim)

    def close(self) -> None:
        """Release every claim still held and stop the heartbeat."""
        for label in list(self.held):
            self.release(label)
        self._stop.set()
        if self._beater is not None:
            self._beater.join(timeout=5)
            self._beater = None

    def __enter__(self) -> "ClaimQueue":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- heartbeat ---

    def beat(self) -> None:
        """Refresh every held claim once; a claim found lost is dropped (and logged).

        A file-system error (a stale NFS handle, say) is logged and the claim kept: the next beat tries
        again, and the heartbeat thread lives on.
        """
        with self._lock:
            claims = list(self.held.values())
        for claim in claims:
            try:
                kept = refresh(self.store, claim)
            except OSError as error:
                self.log(f"warning: could not refresh the claim of '{claim.label}': {error}")
                continue
            if kept:
                continue
            with self._lock:
                lost = self.held.get(claim.label) is claim  # not released meanwhile
                if lost:
                    del self.held[claim.label]
            if lost:
                self.log(f"warning: lost the claim of '{claim.label}' (heartbeat too late); another worker "
                         f"may bake it")

    def _start_heartbeat(self) -> None:
        if self._beater is not None and self._beater.is_alive():
            return
        self._stop.clear()
        interval = self.ttl / 4

        def run() -> None:
            while not self._stop.wait(interval):
                self.beat()

        self._beater = threading.Thread(target=run, name=f"claims-heartbeat-{self.worker}", daemon=True)
        self._beater.start()

    # --- the queue ---

    def is_baked(self, label: str) -> bool:
        """True if the store holds the prompt (baked by anyone)."""
        return find_path(self.store, label) is not None

    def batches(self, items: Iterable[Item], size: int, label_of: Callable[[Item], str]) -> Iterator[list[Item]]:
        """Yield batches of up to `size` items whose prompts this worker has claimed, until none is left.

        Items baked by others are dropped; items claimed by live others are waited for (polling) until
        they are baked or their claim expires and they are claimed here. The caller releases each
        claim when its prompt is saved or failed; whatever is still held when the generator is closed
        is released then.
        """
        pending = list(items)
        poll = max(0.2, min(self.ttl / 4, 1.0))
        waiting_for: frozenset[str] = frozenset()
        try:
            while pending:
                limit = min(size, max(1, math.ceil(len(pending) / self.workers)))
                batch, left, busy = [], [], []
                for item in pending:
                    label = label_of(item)
                    if len(batch) >= limit:
                        left.append(item)
                    elif self.is_baked(label):
                        continue
                    elif self.claim(label):
                        if self.is_baked(label):  # baked and released just before our claim
                            self.release(label)
                            continue
                        batch.append(item)
                    else:
                        left.append(item)
                        busy.append(label)
                pending = left
                if batch:
                    waiting_for = frozenset()
                    yield batch
                elif pending:
                    if frozenset(busy) != waiting_for:
                        waiting_for = frozenset(busy)
                        self._log_waiting(busy)
                    time.sleep(poll)
        finally:
            for label in list(self.held):
                self.release(label)

    def _log_waiting(self, labels: list[str]) -> None:
        if not labels:
            return
        claim = read_claim(claim_file(self.store, labels[0]))
        holder = f" ('{labels[0]}': {claim.describe()})" if claim is not None else ""
        self.log(f"waiting for {len(labels)} prompt(s) claimed by other workers{holder}; a claim expires "
                 f"{self.ttl:.0f} s after its last heartbeat")
