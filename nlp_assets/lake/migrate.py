"""`nlp lake migrate`: a lake of the manifest layout (before issue 22) into Delta tables.

The old layout, read here and nowhere else (its writer, collector and day index are gone)::

    <root>/<asset>/<YYYY-MM-DD>/_manifest/<generation>.json    which files make the day
    <root>/<asset>/<YYYY-MM-DD>/_parts/<token>/<part>.parquet  one folder per write
    <root>/<asset>/<YYYY-MM-DD>/<part>.parquet                 a day from before manifests
    <root>/<asset>/data.parquet                                an unpartitioned asset
    <root>/quarantine/<stage>/<YYYY-MM-DD>/...                 the same, per stage

A day is what its newest manifest lists (a pre-manifest file may be listed beside new ones); a
day without a manifest is its ``<part>.parquet`` files. Nothing else is data: a `_parts` folder
no manifest lists (a writer killed before it published), ``.tmp-*`` manifests and
``.<part>.<hex>.tmp`` files (killed publishers), `_index` (the day index of doc ids, derived),
`_locks` (day leases, not a table: the new lake keeps them as they are).

Where the copy goes: by default into the same root (`in place`), which is what a deployment
runs. The Delta table of an asset is ``<root>/<asset>/_delta_log`` with its files under
``<root>/<asset>/ingest_date=<day>/``, so it sits beside the old ``<root>/<asset>/<day>/``
folders; the new `Lake` reads the log only and never sees them. `new_root` copies into another
lake instead (the old one is then only read).

Each old part becomes one `Lake.write` of its day and part (the part ``day`` first: it replaces
the day), each write one Delta commit carrying the app transaction ``nlp-migrate:<day>`` with
the version ``(generation + 1) * PART_SLOTS + n`` (the day's old manifest generation, the n-th
part of the copy). A rerun skips what a commit already holds (`Lake.write` returns `skipped`),
so a copy killed at any point resumes from the next part, and a day copied from an older
generation is copied again. Once a day's copy is verified (rows and doc ids of every part, and
the columns' types, against this reader), ``<new table>/_migrated/<day>.json`` records it;
later runs skip that day without reading it (app transactions expire after 30 days, the
table's `delta.setTransactionRetentionDuration`; the record does not, so a rerun a year later
cannot overwrite what the pipeline wrote since). A day the Delta table already holds rows of,
not written by the migration, is a conflict: left as it is, reported, exit non-zero.

A lake without old-layout files (a new lake, or one already migrated and cleaned) is not
touched: nothing is written, not even a record. `remove_old` (``--remove-old``) deletes the old
files of every table whose days all verified (the day folders, `data.parquet`); without it the
run only prints what that would remove. Run the migration with the pipeline stopped, and before
`lake_vacuum` runs on the root: a full vacuum deletes every file its table's log does not list,
so the old day folders beside a Delta table too.
"""

from __future__ import annotations

import io
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import polars as pl
from fsspec.implementations.local import LocalFileSystem
from upath import UPath

from nlp_assets.lake import DAY_PART, QUARANTINE, Lake
from nlp_assets.lake.locks import lake_path

MANIFEST_DIR = "_manifest"
PARTS_DIR = "_parts"
INDEX_DIR = "_index"
LOCKS_DIR = "_locks"
DATA_FILE = "data.parquet"
#: Where a verified copy is recorded, per day, in the new table's folder (Delta ignores `_*`).
RECORD_DIR = "_migrated"
APP_ID = "nlp-migrate"
#: App transaction versions of a day: (old generation + 1) * PART_SLOTS + the part's number.
PART_SLOTS = 1_000_000
READ_ATTEMPTS = 20
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_GENERATION = re.compile(r"^(\d{12})\.json$")


# the old layout, read only ---------------------------------------------------------------------
@dataclass(frozen=True)
class DayVersion:
    """One generation of an old day: part name -> file, relative to the day's folder.
    Generation 0 is a day without a manifest (written before manifests)."""

    generation: int
    parts: dict[str, str] = field(default_factory=dict)


class OldLake:
    """A reader of the manifest layout: tables, days, the newest generation's parts."""

    def __init__(self, root: str | UPath):
        self.root = lake_path(root)  # an object store's options from the environment

    def tables(self) -> list[str]:
        """Every table holding old-layout data: `<asset>` and `quarantine/<stage>`."""
        found: list[str] = []
        for child in _dirs(self.root):
            if child.name == QUARANTINE:
                found += [f"{QUARANTINE}/{c.name}" for c in _dirs(child) if self._old(c)]
            elif self._old(child):
                found.append(child.name)
        return sorted(found)

    def _old(self, folder: UPath) -> bool:
        return (folder / DATA_FILE).exists() or any(_DAY.match(p.name) for p in _dirs(folder))

    def is_unpartitioned(self, table: str) -> bool:
        return (self.root / table / DATA_FILE).exists()

    def days(self, table: str) -> list[str]:
        return sorted(p.name for p in _dirs(self.root / table) if _DAY.match(p.name))

    def day_dir(self, table: str, day: str) -> UPath:
        return self.root / table / day

    def version(self, table: str, day: str) -> DayVersion:
        """The day's newest generation (its manifest, or its files if it has none)."""
        folder = self.day_dir(table, day)
        for _ in range(READ_ATTEMPTS):
            generations = _generations(folder / MANIFEST_DIR)
            if not generations:
                legacy = {
                    n[: -len(".parquet")]: n
                    for n in _names(folder)
                    if n.endswith(".parquet") and not n.startswith((".", "_"))
                }
                return DayVersion(0, legacy)
            newest = generations[-1]
            try:
                manifest = json.loads(_read_bytes(folder / MANIFEST_DIR / f"{newest:012d}.json"))
            except FileNotFoundError:  # collected under us by a writer of the old code
                continue
            return DayVersion(newest, dict(manifest["parts"]))
        raise RuntimeError(f"{folder}: its manifest changed {READ_ATTEMPTS} times while read")

    def part_names(self, table: str, day: str) -> list[str]:
        return sorted(self.version(table, day).parts)

    def read_parts(
        self,
        table: str,
        day: str,
        *,
        columns: list[str] | None = None,
        version: DayVersion | None = None,
    ) -> dict[str, pl.DataFrame]:
        """Every part of the day's newest generation (or of `version`) by name."""
        version = version or self.version(table, day)
        folder = self.day_dir(table, day)
        try:
            return {
                part: _read_parquet(folder / version.parts[part], columns)
                for part in sorted(version.parts)
            }
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"{table} {day}: generation {version.generation} lists a missing file ({error})"
            ) from error

    def read_part(self, table: str, day: str | None, part: str = DAY_PART) -> pl.DataFrame:
        if day is None:
            return _read_parquet(self.root / table / DATA_FILE)
        version = self.version(table, day)
        if part not in version.parts:
            raise FileNotFoundError(f"{table} {day} has no part {part!r}")
        return _read_parquet(self.day_dir(table, day) / version.parts[part])

    def read_day(self, table: str, day: str) -> pl.DataFrame:
        """All parts of the day as one frame (no parts: an empty frame without columns)."""
        frames = list(self.read_parts(table, day).values())
        return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()

    def schema(self, table: str, day: str, version: DayVersion) -> dict[str, pl.DataType]:
        """The columns of the day's first part (from its Parquet footer)."""
        for part in sorted(version.parts):
            path = self.day_dir(table, day) / version.parts[part]
            if isinstance(path.fs, LocalFileSystem):
                return dict(pl.read_parquet_schema(path.path))
            return dict(pl.read_parquet_schema(io.BytesIO(_read_bytes(path))))
        return {}

    def old_paths(self, table: str) -> list[UPath]:
        """What `--remove-old` deletes of a table: its day folders, or its data file (and the
        temp files of a killed writer of it)."""
        folder = self.root / table
        paths = [self.day_dir(table, day) for day in self.days(table)]
        if (folder / DATA_FILE).exists():
            paths.append(folder / DATA_FILE)
        paths += [
            folder / n for n in _names(folder) if n.startswith(".data.") and n.endswith(".tmp")
        ]
        return paths


def _dirs(folder: UPath) -> list[UPath]:
    try:
        return sorted(
            (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
            key=lambda p: p.name,
        )
    except (FileNotFoundError, NotADirectoryError):
        return []


def _names(folder: UPath) -> list[str]:
    try:
        return [p.name for p in folder.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _generations(folder: UPath) -> list[int]:
    return sorted(int(m.group(1)) for n in _names(folder) if (m := _GENERATION.match(n)))


def _read_parquet(path: UPath, columns: list[str] | None = None) -> pl.DataFrame:
    if isinstance(path.fs, LocalFileSystem):
        return pl.read_parquet(path.path, columns=columns)
    return pl.read_parquet(io.BytesIO(_read_bytes(path)), columns=columns)


def _read_bytes(path: UPath) -> bytes:
    return path.fs.cat_file(path.path)


# the migration ---------------------------------------------------------------------------------
#: What happened to a day (or an unpartitioned table, day "-"):
COPIED = "copied"  # written (perhaps partly, by an earlier run) and verified now
VERIFIED = "verified"  # every part already committed by an earlier run; verified now
DONE = "done"  # recorded as verified by an earlier run: not read again
WOULD_COPY = "would copy"  # --dry-run
MISMATCH = "MISMATCH"  # the Delta table does not read what the old layout holds
CONFLICT = "CONFLICT"  # the Delta table holds rows of the day the migration did not write
FAILED = "FAILED"  # the copy raised
_BAD = (MISMATCH, CONFLICT, FAILED)


@dataclass
class DayCopy:
    table: str
    day: str | None
    generation: int
    parts: int
    old_rows: int
    new_rows: int | None = None
    status: str = ""
    commits: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status not in _BAD


@dataclass
class Migration:
    """What a run did: one entry per old (table, day), what it removed or would remove."""

    old_root: str
    new_root: str
    days: list[DayCopy] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    would_remove: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.days)

    @property
    def commits(self) -> int:
        return sum(d.commits for d in self.days)

    def summary(self) -> str:
        head = ("TABLE", "DAY", "GEN", "PARTS", "OLD ROWS", "NEW ROWS", "COMMITS", "STATUS")
        rows = [
            (
                d.table,
                d.day or "-",
                str(d.generation),
                str(d.parts),
                str(d.old_rows),
                "-" if d.new_rows is None else str(d.new_rows),
                str(d.commits),
                d.status + (f": {d.detail}" if d.detail else ""),
            )
            for d in self.days
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
            for r in [head, *rows]
        ]
        bad = [d for d in self.days if not d.ok]
        todo = [d for d in self.days if d.status == WOULD_COPY]
        if bad:
            verdict = f"{len(bad)} NOT OK"
        elif todo:
            verdict = f"{len(todo)} to copy"
        else:
            verdict = "all verified" if self.days else "nothing to do"
        lines.append(f"{len(self.days)} table days, {self.commits} commits, {verdict}")
        return "\n".join(lines)


def migrate(
    old_root: str | UPath,
    new_root: str | UPath | None = None,
    *,
    remove_old: bool = False,
    dry_run: bool = False,
    storage_options: dict[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Migration:
    """Copy every old-layout table of `old_root` into Delta tables at `new_root` (default: the
    same root), verify each day, and with `remove_old` delete the old files of the tables whose
    days all verified. See the module's docstring."""
    old = OldLake(old_root)
    lake = Lake(old.root if new_root is None else new_root, storage_options=storage_options)
    say = log or (lambda _: None)
    result = Migration(str(old.root), str(lake.root))
    for table in old.tables():
        if old.is_unpartitioned(table):
            copies = [_copy_unpartitioned(old, lake, table, dry_run)]
        else:
            copies = [_copy_day(old, lake, table, day, dry_run) for day in old.days(table)]
        for copy in copies:
            say(f"{copy.table} {copy.day or '-'}: {copy.status} {copy.detail}".rstrip())
        result.days += copies
        if dry_run or not all(c.ok for c in copies):
            continue
        paths = old.old_paths(table)
        if remove_old:
            for path in paths:
                path.fs.rm(path.path, recursive=True)
                result.removed.append(str(path))
        else:
            result.would_remove += [str(p) for p in paths]
    return result


def _record_path(lake: Lake, table: str, day: str | None) -> UPath:
    return lake.root / table / RECORD_DIR / f"{day or 'data'}.json"


def _recorded(lake: Lake, table: str, day: str | None, generation: int) -> dict | None:
    """The record of a verified copy of that generation of the day, if there is one."""
    try:
        body = json.loads(_read_bytes(_record_path(lake, table, day)))
    except (FileNotFoundError, ValueError):
        return None
    if body.get("generation") != generation or not lake.exists(table):
        return None
    return body


def _record(lake: Lake, copy: DayCopy, parts: dict[str, int]) -> None:
    path = _record_path(lake, copy.table, copy.day)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "table": copy.table,
        "day": copy.day,
        "generation": copy.generation,
        "parts": parts,
        "rows": copy.old_rows,
        "table_version": lake.version(copy.table),
        "verified_at": datetime.now(UTC).isoformat(),
    }
    path.write_bytes(json.dumps(body, indent=1, sort_keys=True).encode())


def _copy_day(old: OldLake, lake: Lake, table: str, day: str, dry_run: bool) -> DayCopy:
    version = old.version(table, day)
    order = sorted(version.parts, key=lambda p: (p != DAY_PART, p))  # `day` replaces the day
    copy = DayCopy(table, day, version.generation, len(order), 0)
    try:
        recorded = _recorded(lake, table, day, version.generation)
        if recorded is not None:
            copy.status, copy.old_rows = DONE, int(recorded.get("rows", 0))
            return copy
        counts = {p: _rows(old.day_dir(table, day) / version.parts[p]) for p in order}
        copy.old_rows = sum(counts.values())
        app = f"{APP_ID}:{day}"
        base = (version.generation + 1) * PART_SLOTS
        held = lake.transaction_version(table, app)
        if held is None and lake.day_rows(table, day):
            copy.status = CONFLICT
            copy.detail = (
                f"the Delta table holds {lake.day_rows(table, day)} rows of this day that the "
                "migration did not write: not overwritten"
            )
            return copy
        todo = [(n, p) for n, p in enumerate(order, 1) if held is None or held < base + n]
        if dry_run:
            copy.status = WOULD_COPY if todo else VERIFIED
            return copy
        folder = old.day_dir(table, day)
        for n, part in todo:
            frame = _read_parquet(folder / version.parts[part])
            written = lake.write(table, day, frame, part, txn=(app, base + n))
            copy.commits += 0 if written.skipped else 1
        if copy.commits == 0 and not order and not lake.exists(table):
            copy.status = VERIFIED  # a day without parts: nothing to hold
            copy.new_rows = 0
            return copy
        _verify_day(old, lake, copy, version, counts)
        if copy.ok:
            copy.status = COPIED if todo else VERIFIED
            _record(lake, copy, counts)
    except Exception as error:  # one day's failure is reported; the others go on
        copy.status = FAILED
        copy.detail = f"{type(error).__name__}: {error}"
    return copy


def _copy_unpartitioned(old: OldLake, lake: Lake, table: str, dry_run: bool) -> DayCopy:
    copy = DayCopy(table, None, 0, 1, 0)
    try:
        recorded = _recorded(lake, table, None, 0)
        if recorded is not None:
            copy.status, copy.old_rows = DONE, int(recorded.get("rows", 0))
            return copy
        copy.old_rows = _rows(old.root / table / DATA_FILE)
        app = f"{APP_ID}:{DATA_FILE}"
        held = lake.transaction_version(table, app)
        if held is None and lake.exists(table):
            copy.status = CONFLICT
            copy.detail = "a Delta table the migration did not write exists: not overwritten"
            return copy
        if dry_run:
            copy.status = WOULD_COPY if held is None else VERIFIED
            return copy
        frame = old.read_part(table, None)
        written = lake.write(table, None, frame, txn=(app, PART_SLOTS + 1))
        copy.commits = 0 if written.skipped else 1
        new = lake.read_part(table, None)
        copy.new_rows = new.height
        problems = _compare(
            {DATA_FILE: _digestible(frame)},
            {DATA_FILE: _digestible(new)},
        )
        problems += _schema_problems(frame.schema, new.schema)
        if problems:
            copy.status, copy.detail = MISMATCH, "; ".join(problems)
        else:
            copy.status = VERIFIED if written.skipped else COPIED
            _record(lake, copy, {DATA_FILE: frame.height})
    except Exception as error:
        copy.status = FAILED
        copy.detail = f"{type(error).__name__}: {error}"
    return copy


def _rows(path: UPath) -> int:
    if isinstance(path.fs, LocalFileSystem):
        return pl.scan_parquet(path.path).select(pl.len()).collect().item()
    return _read_parquet(path).height


def _verify_day(
    old: OldLake, lake: Lake, copy: DayCopy, version: DayVersion, counts: dict[str, int]
) -> None:
    """Rows and doc ids of every part, and the old columns' types, as the new lake reads them."""
    schema = old.schema(copy.table, copy.day or "", version)
    columns = ["doc_id"] if "doc_id" in schema else None
    before = old.read_parts(copy.table, copy.day or "", columns=columns, version=version)
    after = lake.read_parts(copy.table, copy.day or "", columns=columns)
    copy.new_rows = sum(f.height for f in after.values())
    problems = _compare(
        {p: _digestible(f) for p, f in before.items()},
        {p: _digestible(f) for p, f in after.items()},
    )
    if sum(counts.values()) != sum(f.height for f in before.values()):
        problems.append("the old files changed while copied")
    if schema and after:  # the table's types as `Lake` restores them (no data file read)
        problems += _schema_problems(schema, lake.read_days(copy.table, []).schema)
    if problems:
        copy.status, copy.detail = MISMATCH, "; ".join(problems)


def _digestible(frame: pl.DataFrame) -> tuple[int, list[Any] | None]:
    """A part as compared: its rows, and its doc ids sorted (when it has them)."""
    if "doc_id" in frame.columns:
        return frame.height, frame["doc_id"].sort(nulls_last=True).to_list()
    return frame.height, None


def _compare(
    before: dict[str, tuple[int, list[Any] | None]], after: dict[str, tuple[int, list[Any] | None]]
) -> list[str]:
    problems = []
    for part in sorted(set(before) | set(after)):
        old_rows, old_ids = before.get(part, (0, []))
        new_rows, new_ids = after.get(part, (0, []))
        if old_rows != new_rows:
            problems.append(f"part {part}: {old_rows} rows old, {new_rows} new")
        elif old_ids is not None and new_ids is not None and old_rows and old_ids != new_ids:
            problems.append(f"part {part}: other doc ids")
    return problems


def _schema_problems(old: Any, new: Any) -> list[str]:
    return [
        f"column {name}: {dtype} old, {new.get(name)} new"
        for name, dtype in old.items()
        if new.get(name) != dtype
    ]


# the command -----------------------------------------------------------------------------------
def main(
    root: str,
    *,
    remove_old: bool = False,
    dry_run: bool = False,
    out: TextIO | None = None,
) -> int:
    """`nlp lake migrate`: migrate, print the summary (and what is or would be removed);
    0 when every day verified, 1 otherwise."""
    out = out or sys.stdout
    started = time.monotonic()
    if not lake_path(root).exists():
        print(f"nlp lake migrate: no lake at {root}", file=sys.stderr)
        return 1
    result = migrate(root, remove_old=remove_old, dry_run=dry_run)
    print(result.summary(), file=out)
    _paths(out, "removed", result.removed)
    if result.would_remove:
        _paths(out, "old files verified; --remove-old would remove", result.would_remove)
    if dry_run:
        print("dry run: nothing written", file=out)
    print(f"{time.monotonic() - started:.1f} s", file=out)
    return 0 if result.ok else 1


def _paths(out: TextIO, what: str, paths: Iterable[str]) -> None:
    paths = list(paths)
    if paths:
        print(f"{what} ({len(paths)}):", file=out)
        for path in paths:
            print(f"  {path}", file=out)
