"""Per-day leases across every table of the lake (`DayLocks`).

Kept beside Delta Lake because a Delta transaction is one table's: it makes each write of a
table atomic and serialises commits to that table, but no Delta commit spans `cleaned_text`,
`tokens` and `predictions` of one day. Without a lease, a range run (a `backfill_pipeline_spark`
run) and a per-day run of the same day could interleave their stages, so that `tokens` of the
day came from one run's `cleaned_text` and `predictions` from the other's. The lease makes one
run at a time write a day, across tables; `DayLocks` says why no Dagster setting gives that.

A lease is a small JSON object created exclusively (`create_exclusive`: a hard link on local
disk, one conditional PUT on object storage), so two waiters can never both win.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Protocol

from fsspec.implementations.local import LocalFileSystem
from upath import UPath

LOCKS_DIR = "_locks"
#: A reader starts again from the newest lease at most this often before giving up.
READ_ATTEMPTS = 20
_GENERATION = re.compile(r"^(\d{12})\.json$")

_logger = logging.getLogger(__name__)


class DayLease(Protocol):
    """What a lake bound to a run asks before it writes a day (see `DayLocks`)."""

    def hold(self, day: str) -> None: ...


def lake_path(root: str | os.PathLike[str] | UPath) -> UPath:
    """The lake's root as a path, with its object store's options from the environment
    (`settings.lake_filesystem_options`: on S3 the endpoint and region delta-rs reads too, and
    no cached listings, so a lease or table another process wrote is seen). A UPath that
    already carries options is kept as it is."""
    from nlp_assets import settings

    if isinstance(root, UPath) and root.storage_options:
        return root
    text = str(root)
    return UPath(text, **settings.lake_filesystem_options(text))


def _token() -> str:
    """A unique, time-ordered name: milliseconds since the epoch, then randomness."""
    return f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}"


def _names(folder: UPath) -> list[str]:
    try:
        return [p.name for p in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _generations(folder: UPath) -> list[int]:
    return sorted(int(m.group(1)) for n in _names(folder) if (m := _GENERATION.match(n)))


def create_exclusive(path: UPath, data: bytes) -> None:
    """Create `path` holding `data`, or raise FileExistsError if it exists; nobody ever sees it
    partly written. Local disk: a temp file hard-linked to the name (link fails if the name
    exists). Object storage: one PUT with If-None-Match (fsspec `pipe_file(mode="create")`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(path.fs, LocalFileSystem):
        tmp = path.with_name(f".tmp-{_token()}")
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
            os.link(tmp.path, path.path)
        finally:
            tmp.unlink(missing_ok=True)
    else:  # one call with the whole body: a single conditional PUT
        path.fs.pipe_file(path.path, data, mode="create")


def _put(path: UPath, data: bytes) -> None:
    """Replace `path` whole: a temp file renamed over it locally, one PUT on object storage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(path.fs, LocalFileSystem):
        tmp = path.with_name(f".tmp-{_token()}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp.path, path.path)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        path.fs.pipe_file(path.path, data)


def _remove(path: UPath) -> None:
    """Best effort: a file or a folder, gone (already gone is fine)."""
    try:
        path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass
    except OSError as error:  # collected again after the next write
        _logger.warning("could not remove %s: %s", path, error)


def _read_bytes(path: UPath) -> bytes:
    """The whole object in one GET (no file handle shared between threads)."""
    return path.fs.cat_file(path.path)


# Per-day leases --------------------------------------------------------------------------------
class LeaseLost(RuntimeError):
    """Another owner took over a day this owner believed it held."""


@dataclass(frozen=True)
class Lease:
    """One generation of a day's lease; `owner` None: released."""

    day: str
    generation: int
    owner: str | None
    acquired_at: float
    holder: str = ""


_OWNER = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class DayLocks:
    """Per-day leases: while a run holds a day, no other run writes any stage of that day.

    Why a lock in the lake and not Dagster: the instance's `tag_concurrency_limits` on
    `dagster/partition` (applyLimitPerUniqueValue) allows one run per day, but a range run (a
    single-run backfill such as `backfill_pipeline_spark`) carries no `dagster/partition` tag,
    only `dagster/asset_partition_range_start`/`_end`; a tag limit matches one key and one value
    per run, so no limit says "a range run excludes the runs of each of its days". Concurrency
    pools (`pool=`, `dagster/concurrency_key`, run-granularity pools) are fixed per asset, not
    per partition. So each day has a lease here, taken by every run that writes the day (per-day
    runs, micro-batches and range runs alike) before its first step and held until the run
    ends; the tag limit still keeps per-day runs of one day from even starting together.

    A lease is ``_locks/<day>/<generation>.json`` naming its owner (a run id), created
    exclusively (`create_exclusive`): taking a free or stale lease, or releasing one, is
    publishing the next generation, so two waiters can never both win. Days are taken in
    sorted order, so two range runs cannot deadlock on each other. A lease held by another
    owner is free when:

    - it was released;
    - `is_finished(owner)` says its run has finished (a Dagster run that succeeded, failed or
      was cancelled; a killed run worker is marked failed by run monitoring);
    - `is_finished` does not know the owner (another instance, or none) and no process of the
      owner has beaten its heartbeat within `ttl_seconds`: each process holding a lease renews
      ``_locks/_beats/<owner>/<process>.json`` every ttl/3 and removes it in `close()`.

    A run waits for its days with a log line naming the day and the holder; past `wait_seconds`
    it fails (and is retried) rather than waiting for ever. Steps of one run (other processes,
    retried steps) share its lease. Under the multiprocess or k8s executor a run takes its days
    in its first step's process, after Dagster gave that step its pool slot: a run whose first
    step is in pool `gpu` can hold that slot while it waits for a range run that needs `gpu`
    later; the wait then ends at `wait_seconds`. Range runs start at `cleaned_text`, outside
    any pool, so the stock jobs do not meet this.
    """

    def __init__(
        self,
        root: str | UPath,
        owner: str,
        *,
        is_finished: Callable[[str], bool | None] | None = None,
        ttl_seconds: float = 60.0,
        wait_seconds: float | None = None,
        poll_seconds: float = 0.5,
        log: Callable[[str], None] | None = None,
    ):
        if not _OWNER.match(owner):
            raise ValueError(f"invalid lease owner {owner!r}")
        self.root = lake_path(root) / LOCKS_DIR
        self.owner = owner
        self.is_finished = is_finished
        self.ttl_seconds = ttl_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.log = log or log_info
        self.held: dict[str, int] = {}
        self._beat = (
            self.root / "_beats" / owner / f"{socket.gethostname()}-{os.getpid()}-{_token()}.json"
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    # the lease of one day ----------------------------------------------------------------------
    def current(self, day: str) -> Lease | None:
        folder = self.root / day
        for _ in range(READ_ATTEMPTS):
            generations = _generations(folder)
            if not generations:
                return None
            try:
                body = json.loads(_read_bytes(folder / f"{generations[-1]:012d}.json"))
            except FileNotFoundError:  # pruned under us
                continue
            return Lease(
                day, generations[-1], body.get("owner"), body["acquired_at"], body.get("holder", "")
            )
        raise RuntimeError(f"{folder}: its lease changed {READ_ATTEMPTS} times while read")

    def free(self, lease: Lease | None) -> tuple[bool, str]:
        """Whether `lease` may be taken over by this owner, and why (for the log)."""
        if lease is None:
            return True, "never taken"
        if lease.owner is None:
            return True, "released"
        finished = self.is_finished(lease.owner) if self.is_finished else None
        if finished is True:
            return True, "its run has finished"
        if finished is False:
            return False, "its run is in progress"
        if self._beating(lease.owner):
            return False, "a process of it beat its heartbeat less than the ttl ago"
        return True, f"no heartbeat for {self.ttl_seconds:.0f} s and its run is unknown here"

    def _beating(self, owner: str) -> bool:
        folder = self.root / "_beats" / owner
        now = time.time()
        for name in _names(folder):
            try:
                until = json.loads(_read_bytes(folder / name))["until"]
            except (FileNotFoundError, ValueError, KeyError):
                continue  # a temp file, or removed meanwhile
            if until > now:
                return True
            if until < now - 10 * self.ttl_seconds:  # a process killed long ago
                _remove(folder / name)
        return False

    def _publish(self, day: str, previous: Lease | None, owner: str | None, why: str) -> int:
        generation = (previous.generation if previous else 0) + 1
        body = {
            "owner": owner,
            "acquired_at": time.time(),
            "holder": f"{socket.gethostname()}:{os.getpid()}",
            "previous_owner": previous.owner if previous else None,
            "why": why,
        }
        create_exclusive(self.root / day / f"{generation:012d}.json", json.dumps(body).encode())
        for old in _generations(self.root / day):
            if old < generation - 1:
                _remove(self.root / day / f"{old:012d}.json")
        return generation

    # taking, holding, releasing ---------------------------------------------------------------
    def acquire(self, days: Iterable[str], *, wait_seconds: float | None = None) -> None:
        """Take every day (sorted, so range runs cannot deadlock), waiting for their holders."""
        wait = self.wait_seconds if wait_seconds is None else wait_seconds
        deadline = None if wait is None else time.monotonic() + wait
        for day in sorted(set(days)):
            self._acquire(day, deadline)

    def _acquire(self, day: str, deadline: float | None) -> None:
        self._start_heartbeat()  # before the lease exists, so it is never seen without one
        started, waited_for, last_log = time.monotonic(), None, 0.0
        while True:
            lease = self.current(day)
            if lease is not None and lease.owner == self.owner:
                self.held[day] = lease.generation
                return
            free, why = self.free(lease)
            if free:
                try:
                    generation = self._publish(day, lease, self.owner, why)
                except FileExistsError:  # another waiter took it first
                    continue
                newest = self.current(day)
                if newest is None or newest.generation != generation:
                    continue  # a generation pruned and created again: not the newest, not ours
                self.held[day] = generation
                if waited_for:
                    self.log(
                        f"took the lake lock of day {day} after waiting "
                        f"{time.monotonic() - started:.1f} s for run {waited_for} ({why})"
                    )
                return
            assert lease is not None and lease.owner is not None
            now = time.monotonic()
            if lease.owner != waited_for or now - last_log > 60:
                since = time.strftime("%H:%M:%S", time.gmtime(lease.acquired_at))
                self.log(
                    f"waiting for the lake lock of day {day}: run {lease.owner} holds it since "
                    f"{since} UTC ({why}); no two runs write one day at a time"
                )
                waited_for, last_log = lease.owner, now
            if deadline is not None and now > deadline:
                raise TimeoutError(
                    f"gave up after {now - started:.0f} s waiting for the lake lock of day {day} "
                    f"held by run {lease.owner} ({why}); it is free once that run finishes"
                )
            time.sleep(self.poll_seconds)

    def hold(self, day: str) -> None:
        """Before a write: take the day if not yet held; if held, check nobody took it over."""
        if day not in self.held:
            self.acquire([day])
            return
        lease = self.current(day)
        if lease is None or lease.owner != self.owner:
            holder = lease.owner if lease else "nobody"
            raise LeaseLost(
                f"run {self.owner} lost the lake lock of day {day} to {holder} (its heartbeat "
                f"or run status looked dead to another run); not writing"
            )

    def release(self, days: Iterable[str] | None = None) -> None:
        """Give days back (all held ones by default) for an owner that ends before its run."""
        for day in sorted(self.held if days is None else set(days)):
            lease = self.current(day)
            if lease is not None and lease.owner == self.owner:
                with suppress(FileExistsError):  # taken over meanwhile: not ours to release
                    self._publish(day, lease, None, f"released by {self.owner}")
            self.held.pop(day, None)

    @contextmanager
    def holding(self, days: Iterable[str]) -> Iterator[DayLocks]:
        days = list(days)
        self.acquire(days)
        try:
            yield self
        finally:
            self.release(days)
            self.close()

    # heartbeat --------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        with self._guard:
            if self._thread is not None:
                return
            self._stop.clear()
            self._write_beat()
            self._thread = threading.Thread(
                target=self._heartbeat, name=f"lake-lease-{self.owner}", daemon=True
            )
            self._thread.start()

    def _write_beat(self) -> None:
        body = {"owner": self.owner, "until": time.time() + self.ttl_seconds}
        _put(self._beat, json.dumps(body).encode())

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 3):
            try:
                self._write_beat()
            except OSError as error:  # the next beat tries again; waiters see it as silence
                _logger.warning("lake lease heartbeat of %s failed: %s", self.owner, error)

    def close(self) -> None:
        """This process stops beating for the owner (its leases stay: a run ends when Dagster
        says so, or when none of its processes beats any more)."""
        with self._guard:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
            _remove(self._beat)
            if isinstance(self._beat.fs, LocalFileSystem):  # other processes may still beat
                with suppress(OSError):
                    os.rmdir(self._beat.parent.path)


def log_info(message: str) -> None:
    _logger.info(message)
