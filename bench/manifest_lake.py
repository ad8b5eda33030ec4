"""RETIRED, kept only as `bench.lake`'s baseline: the manifest lake, `nlp_assets/lake.py` as it
was at commit 7bca78f, before the lake moved onto Delta Lake (issue 22). `bench.lake` measures
the Delta lake against this writer in the same run. Nothing in the package imports it, and
nothing may: the package's lake is `nlp_assets.lake`. Below, the file unchanged.

The Parquet lake: where every stage's data lives, and the read API for code outside Dagster.

Layout (`root` is a local folder or any fsspec URL, e.g. ``s3://bucket/nlp``)::

    <root>/<asset>/<YYYY-MM-DD>/_manifest/<generation>.json    which files make the day now
    <root>/<asset>/<YYYY-MM-DD>/_parts/<token>/<part>.parquet  one folder per write, never reused
    <root>/<asset>/<YYYY-MM-DD>/_index/<columns>.parquet       a day index (`read_day_columns`)
    <root>/<asset>/data.parquet                                an unpartitioned asset
    <root>/quarantine/<stage>/<YYYY-MM-DD>/...                 the same, per stage
    <root>/_locks/<YYYY-MM-DD>/<generation>.json               the day's lease (`DayLocks`)

A daily partition is a set of parts. A micro-batch writes the part named after what it covers, so
a retried run replaces its own part and nothing else; a whole-day run writes the part ``day``,
which replaces every part of the day (it recomputed all of them).

Publication (readers see the old day or the new day, never a mix, on local disk and object
storage alike): a write puts its data in a new file under a unique name, then publishes the
day's next manifest, ``_manifest/<n+1>.json``, listing the live file of every part. The manifest
is created exclusively: on local disk a complete temp file hard-linked to its name, on object
storage one conditional PUT (``If-None-Match: *``) through fsspec's ``pipe_file(mode="create")``
(s3fs >= 2024.12 with botocore > 1.35.20 does it on S3; a backend without it is not safe for
concurrent writers). So two writers can never both publish generation n+1: the loser re-reads
and re-applies its change. Rename, which object stores lack, is never needed. Readers take the
highest generation, then read the files it lists; a file removed under them means a newer
generation exists, so they start again from the manifest. Only after the switch are files
collected: the ones the switch superseded at once; debris of a killed writer, and manifests,
only once older than `gc_grace_seconds` (a writer may still be about to publish its file, and
no generation's name may ever be reused). A writer killed at any step leaves the old day or the
new one. A day written before manifests existed (``<day>/<part>.parquet``, no ``_manifest``)
reads as before; its next write publishes generation 1 over those files.
"""

from __future__ import annotations

import io
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
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

import polars as pl
from fsspec.implementations.local import LocalFileSystem
from upath import UPath

DAY_PART = "day"
QUARANTINE = "quarantine"
MANIFEST_DIR = "_manifest"
PARTS_DIR = "_parts"
INDEX_DIR = "_index"
#: Parts a day index may leave uncovered before a reader writes it again over them.
INDEX_AFTER_PARTS = 8
LOCKS_DIR = "_locks"
#: Unreferenced files younger than this may belong to a writer about to publish: kept.
GC_GRACE_SECONDS = 3600.0
#: A reader starts again from the manifest at most this often before giving up.
READ_ATTEMPTS = 20
_PART_NAME = re.compile(r"^[A-Za-z0-9._=-]+$")
_GENERATION = re.compile(r"^(\d{12})\.json$")
_TOKEN = re.compile(r"^(\d{13})-[0-9a-f]+$")

_logger = logging.getLogger(__name__)


class DayLease(Protocol):
    """What a lake bound to a run asks before it writes a day (see `DayLocks`)."""

    def hold(self, day: str) -> None: ...


@dataclass(frozen=True)
class DayVersion:
    """One generation of a day: part name -> file, relative to the day's folder.
    Generation 0 is a day without a manifest (written before manifests, or not at all)."""

    generation: int
    parts: dict[str, str] = field(default_factory=dict)


def _token() -> str:
    """A unique, time-ordered name: milliseconds since the epoch, then randomness."""
    return f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}"


def _token_age(name: str) -> float | None:
    match = _TOKEN.match(name)
    return time.time() - int(match.group(1)) / 1000 if match else None


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


class Lake:
    def __init__(
        self,
        root: str | UPath,
        *,
        lease: DayLease | None = None,
        gc_grace_seconds: float = GC_GRACE_SECONDS,
    ):
        """`lease`: asked to hold a day before every write of it (a run's `DayLocks`)."""
        self.root = UPath(root)
        self.lease = lease
        self.gc_grace_seconds = gc_grace_seconds

    # paths -----------------------------------------------------------------------------------
    def day_dir(self, asset: str, day: str) -> UPath:
        return self.root / asset / day

    def part_path(self, asset: str, day: str | None, part: str = DAY_PART) -> UPath:
        """The file holding a part now (where it would be in the pre-manifest layout when the
        day has no such part); for an unpartitioned asset its data file."""
        if day is None:
            return self.root / asset / "data.parquet"
        _check_part(part)
        relative = self.version(asset, day).parts.get(part, f"{part}.parquet")
        return self.day_dir(asset, day) / relative

    def parts(self, asset: str, day: str) -> list[UPath]:
        """The files of the day's current generation, sorted by part name; each is named
        ``<part>.parquet``. For engines that read files themselves (Spark): a whole-day rewrite
        removes them after it publishes, so prefer `read_day` / `read_parts`."""
        folder = self.day_dir(asset, day)
        return sorted(
            (folder / rel for rel in self.version(asset, day).parts.values()), key=lambda p: p.name
        )

    def part_names(self, asset: str, day: str) -> list[str]:
        return sorted(self.version(asset, day).parts)

    def version(self, asset: str, day: str) -> DayVersion:
        """The day's current generation (its manifest, or its files if it has none)."""
        folder = self.day_dir(asset, day)
        for _ in range(READ_ATTEMPTS):
            generations = _generations(folder / MANIFEST_DIR)
            if not generations:
                legacy = {
                    n[: -len(".parquet")]: n
                    for n in _names(folder)
                    if n.endswith(".parquet") and not n.startswith(".")
                }
                return DayVersion(0, legacy)
            newest = generations[-1]
            try:
                manifest = json.loads(_read_bytes(folder / MANIFEST_DIR / f"{newest:012d}.json"))
            except FileNotFoundError:  # collected under us: two newer ones exist
                continue
            return DayVersion(newest, dict(manifest["parts"]))
        raise RuntimeError(f"{folder}: its manifest changed {READ_ATTEMPTS} times while read")

    # writing ---------------------------------------------------------------------------------
    def write(
        self, asset: str, day: str | None, frame: pl.DataFrame, part: str = DAY_PART
    ) -> UPath:
        """Write a part and publish it; a whole-day part replaces the day. Returns its file."""
        if day is None:
            return self._write_unpartitioned(self.part_path(asset, None), frame)
        _check_part(part)
        if self.lease is not None:
            self.lease.hold(day)
        folder = self.day_dir(asset, day)
        relative = f"{PARTS_DIR}/{_token()}/{part}.parquet"
        data = folder / relative
        data.parent.mkdir(parents=True, exist_ok=True)
        written = time.monotonic()
        try:
            with data.open("wb") as handle:
                frame.write_parquet(handle, compression="zstd", statistics=True)
        except BaseException:
            _remove(data.parent)  # a failed write leaves no debris and the day as it was
            raise

        def change(parts: dict[str, str]) -> dict[str, str]:
            return {part: relative} if part == DAY_PART else {**parts, part: relative}

        old, new = self._publish(asset, day, change, written)
        self._collect(folder, old, new)
        return data

    def write_days(self, asset: str, days: Iterable[str], frame: pl.DataFrame) -> UPath:
        """Write a frame covering several days as one whole-day part per day (split on its
        `ingest_date`); a day without rows gets an empty part. Returns the asset's folder.
        Each day is published on its own: readers see each day whole."""
        days = [str(d) for d in days]
        if "ingest_date" not in frame.columns:
            raise ValueError(f"{asset}: a frame covering {len(days)} days needs an ingest_date")
        stray = frame.filter(~pl.col("ingest_date").cast(pl.String).is_in(days))
        if stray.height:
            found = sorted(map(str, stray["ingest_date"].unique().to_list()))
            raise ValueError(f"{asset}: rows of days {found} outside the run's days {days}")
        for day in days:
            self.write(asset, day, frame.filter(pl.col("ingest_date").cast(pl.String) == day))
        return self.root / asset

    def write_quarantine(
        self, stage: str, day: str, frame: pl.DataFrame, part: str = DAY_PART
    ) -> UPath:
        return self.write(f"{QUARANTINE}/{stage}", day, frame, part)

    def _write_unpartitioned(self, path: UPath, frame: pl.DataFrame) -> UPath:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("wb") as handle:
                frame.write_parquet(handle, compression="zstd", statistics=True)
            tmp.rename(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed write leaves neither debris nor a half file
            raise
        return path

    def _publish(
        self,
        asset: str,
        day: str,
        change: Callable[[dict[str, str]], dict[str, str]],
        written: float,
    ) -> tuple[DayVersion, DayVersion]:
        """Publish the next generation (compare-and-swap on its name); (old, new).

        The swap is sound because a generation's name is never reused: a manifest is collected
        only when older than the grace period, and a publisher never creates generation n+1 from
        a reading of generation n older than half of it (n+1 would have been published after
        that reading, so it is younger than the grace period and still exists)."""
        folder = self.day_dir(asset, day)
        for _ in range(100):
            if time.monotonic() - written > self.gc_grace_seconds / 2:
                raise TimeoutError(
                    f"{asset} {day}: publishing took over half the collection grace period "
                    f"({self.gc_grace_seconds:.0f} s); its data may be collected: write again"
                )
            current = self.version(asset, day)
            read_at = time.monotonic()
            new = DayVersion(current.generation + 1, change(dict(current.parts)))
            body = {
                "generation": new.generation,
                "parts": new.parts,
                "published_at": time.time(),
                "writer": f"{socket.gethostname()}:{os.getpid()}",
            }
            if time.monotonic() - read_at > self.gc_grace_seconds / 2:
                continue  # the reading is stale (a paused process): read again
            try:
                create_exclusive(
                    folder / MANIFEST_DIR / f"{new.generation:012d}.json",
                    json.dumps(body, sort_keys=True).encode(),
                )
            except FileExistsError:  # another writer published first: apply ours to theirs
                continue
            return current, new
        raise RuntimeError(f"{asset} {day}: 100 writers in a row published before this one")

    def _collect(self, folder: UPath, old: DayVersion, new: DayVersion) -> None:
        """After the switch: what it superseded, old manifests, debris past the grace period."""
        live = set(new.parts.values())
        for relative in set(old.parts.values()) - live:
            # a new-layout file goes with its own folder; a pre-manifest file alone
            _remove(folder / (relative.rsplit("/", 1)[0] if "/" in relative else relative))
        for generation in _generations(folder / MANIFEST_DIR):  # oldest first
            if generation >= new.generation - 1:
                break
            manifest = folder / MANIFEST_DIR / f"{generation:012d}.json"
            try:
                published = json.loads(_read_bytes(manifest))["published_at"]
            except FileNotFoundError:
                continue
            if time.time() - published <= self.gc_grace_seconds:
                break  # this one and the newer ones are kept (see _publish)
            _remove(manifest)
        live_dirs = {r.rsplit("/", 1)[0] for r in live if "/" in r}
        for name in _names(folder / PARTS_DIR):
            age = _token_age(name)
            unreferenced = f"{PARTS_DIR}/{name}" not in live_dirs
            if unreferenced and age is not None and age > self.gc_grace_seconds:
                _remove(folder / PARTS_DIR / name)
        for name in _names(folder / MANIFEST_DIR):  # temp files of a killed publisher
            age = _token_age(name.removeprefix(".tmp-"))
            if name.startswith(".tmp-") and age is not None and age > self.gc_grace_seconds:
                _remove(folder / MANIFEST_DIR / name)

    # reading ---------------------------------------------------------------------------------
    def read_part(self, asset: str, day: str | None, part: str = DAY_PART) -> pl.DataFrame:
        if day is None:
            path = self.part_path(asset, None)
            if not path.exists():
                raise FileNotFoundError(
                    f"{asset} has no data for its only partition at {path}: materialise it first"
                )
            return _read_parquet(path)
        _check_part(part)
        _, frames = self._read(asset, day, lambda parts: [part] if part in parts else [])
        if not frames:
            raise FileNotFoundError(
                f"{asset} has no data for partition {day}, part {part} at "
                f"{self.day_dir(asset, day)}: materialise it first"
            )
        return frames[part]

    def read_parts(
        self, asset: str, day: str, *, columns: list[str] | None = None
    ) -> dict[str, pl.DataFrame]:
        """Every part of the day by name, all of one generation (empty if no data)."""
        return self._read(asset, day, lambda parts: list(parts), columns)[1]

    def read_day(
        self,
        asset: str,
        day: str,
        *,
        missing_ok: bool = False,
        columns: list[str] | None = None,
        exclude_parts: Iterable[str] = (),
    ) -> pl.DataFrame:
        """All parts of the day as one frame (one generation); `exclude_parts` leaves some out
        (a micro-batch looking at the rest of its day)."""
        excluded = set(exclude_parts)
        version, frames = self._read(
            asset, day, lambda parts: [p for p in parts if p not in excluded], columns
        )
        if not version.parts:
            if missing_ok:
                return pl.DataFrame()
            raise FileNotFoundError(
                f"{asset} has no data for {day} under {self.day_dir(asset, day)}: materialise "
                "that partition first"
            )
        if not frames:
            return pl.DataFrame()
        return pl.concat(list(frames.values()), how="vertical_relaxed")

    def read_day_columns(
        self,
        asset: str,
        day: str,
        columns: list[str],
        *,
        exclude_parts: Iterable[str] = (),
        index_after: int = INDEX_AFTER_PARTS,
    ) -> pl.DataFrame:
        """`columns` of every part of the day (one generation) but `exclude_parts`, at a cost
        that does not grow with the number of parts: what a micro-batch needs of the rest of
        its day (ids and content hashes already there).

        Through a day index, `<day>/_index/<columns>.parquet`: those columns of the parts it
        covers, each row with the file it was read from. A part counts as covered only while
        the day's manifest still lists that file (a retried part or a whole-day rewrite has
        another), so any index, however old or raced, is a sound start: the parts it does not
        cover are read from their files, and once `index_after` of them were, the index is
        written again (atomically) over everything read.
        """
        excluded = set(exclude_parts)
        path = self.day_dir(asset, day) / INDEX_DIR / f"{'-'.join(columns)}.parquet"
        try:
            index = _read_parquet(path)
        except FileNotFoundError:
            index = pl.DataFrame(
                schema={"part": pl.String, "file": pl.String, **dict.fromkeys(columns, pl.String)}
            )
        covered: dict[str, pl.DataFrame] = {}

        def uncovered(parts: dict[str, str]) -> list[str]:
            # a pre-manifest file (`<part>.parquet`) is rewritten in place: never covered
            named = {p: f for p, f in parts.items() if f.startswith(f"{PARTS_DIR}/")}
            live = pl.DataFrame(
                {"part": list(named), "file": list(named.values())},
                schema={"part": pl.String, "file": pl.String},
            )
            covered["rows"] = index.join(live, on=["part", "file"], how="semi")
            done = set(covered["rows"]["part"])
            return [p for p in parts if p not in done]

        version, frames = self._read(asset, day, uncovered, columns)
        fresh = [
            frame.select(columns).with_columns(
                pl.lit(part).alias("part"), pl.lit(version.parts[part]).alias("file")
            )
            for part, frame in frames.items()
        ]
        rows = pl.concat(
            [covered["rows"], *(f.select(covered["rows"].columns) for f in fresh)],
            how="vertical_relaxed",
        )
        if len(fresh) >= index_after:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_unpartitioned(path, rows)
        return rows.filter(~pl.col("part").is_in(list(excluded))).select(columns)

    def read_days(self, asset: str, days: Iterable[str | date]) -> pl.DataFrame:
        """Several days as one frame (days with no data are skipped)."""
        frames = [self.read_day(asset, str(d), missing_ok=True) for d in days]
        frames = [f for f in frames if f.width]
        return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()

    def read_quarantine(self, stage: str, day: str | date) -> pl.DataFrame:
        return self.read_day(f"{QUARANTINE}/{stage}", str(day), missing_ok=True)

    def _read(
        self,
        asset: str,
        day: str,
        select: Callable[[dict[str, str]], list[str]],
        columns: list[str] | None = None,
    ) -> tuple[DayVersion, dict[str, pl.DataFrame]]:
        """The selected parts of one generation; starts again from the manifest when a file was
        collected under the reader (a newer generation was published meanwhile)."""
        folder = self.day_dir(asset, day)
        for _ in range(READ_ATTEMPTS):
            version = self.version(asset, day)
            try:
                return version, {
                    part: _read_parquet(folder / version.parts[part], columns)
                    for part in sorted(select(version.parts))
                }
            except FileNotFoundError as error:
                if self.version(asset, day) == version:
                    raise FileNotFoundError(
                        f"{asset} {day}: generation {version.generation} lists a file that is "
                        f"missing ({error}); the lake was changed by hand: rewrite that day"
                    ) from error
        raise RuntimeError(
            f"{asset} {day} was rewritten {READ_ATTEMPTS} times while being read: try again"
        )


def _read_parquet(path: UPath, columns: list[str] | None = None) -> pl.DataFrame:
    if isinstance(path.fs, LocalFileSystem):
        return pl.read_parquet(path.path, columns=columns)
    return pl.read_parquet(io.BytesIO(_read_bytes(path)), columns=columns)


def _read_bytes(path: UPath) -> bytes:
    """The whole object in one GET (no file handle shared between threads)."""
    return path.fs.cat_file(path.path)


def _check_part(part: str) -> None:
    if not _PART_NAME.match(part):
        raise ValueError(f"invalid part name {part!r}: use letters, digits and . _ = -")


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
        self.root = UPath(root) / LOCKS_DIR
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
