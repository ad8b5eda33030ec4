"""The lake: every asset a Delta Lake table, and the read API for code outside Dagster.

Layout (`root` is a local folder or an object-store URL, e.g. ``s3://bucket/nlp``)::

    <root>/<asset>/_delta_log/...                 the table's transaction log
    <root>/<asset>/ingest_date=<YYYY-MM-DD>/...   its Parquet files, one folder per day
    <root>/quarantine/<stage>/...                 the quarantine of a stage, the same way
    <root>/_locks/<YYYY-MM-DD>/...                the day's lease (`DayLocks`, not a table)

Every table is partitioned by ``ingest_date``; a String column ``part`` names the micro-batch a
row came in (``day`` for a whole-day write). A write is one Delta commit: a micro-batch replaces
its own part (overwrite with the predicate ``ingest_date = d AND part = p``), a whole-day run
replaces the day, an unpartitioned asset is replaced whole. So a retried run replaces exactly
what its earlier attempt wrote, and a reader sees a table version from before a commit or after
it, never a mix. Delta-rs (``deltalake``) does the log, the atomic commit (a conditional PUT on
object storage), compaction, vacuum, checkpoints and time travel; this module only decides what
each stage writes and restores the polars types Delta lacks.

Types: Delta has no unsigned integers, fixed-size arrays or null type. A write stores
``UInt32`` as ``Int64``, ``Array(T, n)`` as ``List(T)``, ``UInt8``/``UInt16`` as ``Int32`` and
a ``Null`` column as the table's type (or String), and keeps the polars type in the Delta
field's metadata (``nlp.dtype``), so a read through `Lake` gives back the frame the stage wrote.
Other engines read the Delta types (docs/lake.md).

A day with no rows and a day never written read alike (no rows): Delta keeps no empty
partition. Only a table that does not exist raises `FileNotFoundError`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction
from polars._typing import PolarsDataType
from upath import UPath

from nlp_assets import tracing
from nlp_assets.lake.locks import DayLease, DayLocks, LeaseLost, lake_path

__all__ = [
    "DAY_PART",
    "PARTITION",
    "PART_COLUMN",
    "QUARANTINE",
    "AsOf",
    "DayLease",
    "DayLocks",
    "FileAdd",
    "Lake",
    "LeaseLost",
    "WriteResult",
]

DAY_PART = "day"
QUARANTINE = "quarantine"
#: The partition column of every daily table, and the column naming a row's part.
PARTITION = "ingest_date"
#: What each commit of ours records in its commitInfo (`Lake.runs`).
COMMIT_RUN_ID, COMMIT_PART, COMMIT_TRACE_ID = "nlp.run_id", "nlp.part", "nlp.trace_id"
COMMIT_DAYS = "nlp.days"  # comma-separated
PART_COLUMN = "part"
#: Field metadata keys: the polars dtype a column had before it was stored, and a column the
#: lake added (an `ingest_date` the stage's frame did not have).
DTYPE_KEY = "nlp.dtype"
ADDED_KEY = "nlp.added"
#: How often a write that lost a commit race to a conflicting commit is tried again.
COMMIT_ATTEMPTS = 25
#: Parquet as the old lake wrote it (zstd, with statistics).
_WRITER = WriterProperties(compression="ZSTD")
#: Set when a table is created: app transactions (one per Kafka range) expire after 30 days.
#: A log checkpoint every 10 commits: loading a table replays the log since the last one (at
#: delta-rs's default of 100, 9-22 ms a load 50 commits past it; at 10, about 4 ms: bench.lake).
TABLE_CONFIGURATION = {
    "delta.setTransactionRetentionDuration": "interval 30 days",
    "delta.checkpointInterval": "10",
}
#: A data file delta-rs is writing on local disk (renamed to its name once whole).
_STAGING = re.compile(r"\.parquet#\d+$")
_PART_NAME = re.compile(r"^[A-Za-z0-9._=-]+$")

#: A table version (int) or a point in time (datetime, or an ISO 8601 string).
AsOf = int | datetime | str | None

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteResult:
    """What one write committed: the table, its version just after the commit (a concurrent
    writer's commit may already be on top), the rows written; `skipped` when the table already
    held this app transaction (a replayed Kafka range)."""

    uri: str
    version: int | None
    rows: int
    skipped: bool = False


@dataclass(frozen=True)
class FileAdd:
    """A Parquet file written into a table's day folder by someone else (a Spark executor),
    waiting for `Lake.commit_files`: its path relative to the table, bytes, rows, day, and its
    Delta statistics (JSON: ``numRecords``, ``minValues``, ``maxValues``, ``nullCount``)."""

    path: str
    size: int
    rows: int
    day: str
    stats: str


class Lake:
    def __init__(
        self,
        root: str | UPath,
        *,
        lease: DayLease | None = None,
        storage_options: Mapping[str, str] | None = None,
        part_txn: tuple[str, str, int] | None = None,
        run_id: str | None = None,
    ):
        """`lease`: asked to hold a day before every write of it (a run's `DayLocks`).
        `part_txn` (part, app id, version): every write of that part carries that Delta app
        transaction (a Kafka micro-batch run's range, `resources.lake.kafka_transaction`).
        `storage_options`: delta-rs object-store options (endpoint, region...); credentials
        come from the standard environment variables (AWS_ACCESS_KEY_ID...). `run_id`: the
        Dagster run writing, recorded in each commit's `commitInfo` (`runs`)."""
        self.root = lake_path(root)
        self.run_id = run_id
        self.lease = lease
        self.storage_options = dict(storage_options) if storage_options else None
        self.part_txn = part_txn

    # tables ----------------------------------------------------------------------------------
    def table_uri(self, asset: str) -> str:
        path = self.root / asset
        if path.protocol in ("", "file", "local"):
            return os.path.abspath(path.path)
        return str(path)

    def table(self, asset: str, as_of: AsOf = None) -> DeltaTable | None:
        """The asset's Delta table (at `as_of`), or None when it does not exist."""
        try:
            table = DeltaTable(
                self.table_uri(asset),
                version=as_of if isinstance(as_of, int) else None,
                storage_options=self.storage_options,
            )
        except TableNotFoundError:
            return None
        if as_of is not None and not isinstance(as_of, int):
            table.load_as_version(_as_datetime(as_of))
        return table

    def exists(self, asset: str) -> bool:
        return self.table(asset) is not None

    def version(self, asset: str) -> int | None:
        table = self.table(asset)
        return None if table is None else table.version()

    def transaction_version(self, asset: str, app_id: str) -> int | None:
        """The newest version of app transaction `app_id` the table holds (Kafka ranges)."""
        table = self.table(asset)
        return None if table is None else table.transaction_version(app_id)

    # writing ---------------------------------------------------------------------------------
    def write(
        self,
        asset: str,
        day: str | date | None,
        frame: pl.DataFrame,
        part: str = DAY_PART,
        *,
        txn: tuple[str, int] | None = None,
    ) -> WriteResult:
        """One commit: a part replaces its own rows of the day, the part ``day`` the whole day,
        and `day=None` (an unpartitioned asset) the whole table. `txn` (app id, version) is a
        Delta app transaction: when the table already holds that version or a newer one for
        the app id, nothing is written (`WriteResult.skipped`)."""
        if day is None:
            return self._commit(asset, frame, None, None, txn)
        day = _iso_day(day)
        _check_part(part)
        if txn is None and self.part_txn is not None and part == self.part_txn[0]:
            txn = (self.part_txn[1], self.part_txn[2])
        predicate = f"{PARTITION} = '{day}'"
        if part != DAY_PART:
            predicate += f" AND {PART_COLUMN} = '{part}'"
        return self._commit(asset, frame, [day], predicate, txn, part=part)

    def write_days(
        self, asset: str, days: Iterable[str | date], frame: pl.DataFrame
    ) -> WriteResult:
        """A frame covering several days (split on its `ingest_date`) replaces those days, in one
        commit; a day of `days` without rows ends up empty."""
        wanted = sorted({_iso_day(d) for d in days})
        if PARTITION not in frame.columns:
            raise ValueError(f"{asset}: a frame covering {len(wanted)} days needs an ingest_date")
        listed = ", ".join(f"'{d}'" for d in wanted)
        return self._commit(asset, frame, wanted, f"{PARTITION} IN ({listed})", None)

    def write_quarantine(
        self,
        stage: str,
        day: str | date,
        frame: pl.DataFrame,
        part: str = DAY_PART,
        *,
        txn: tuple[str, int] | None = None,
    ) -> WriteResult:
        return self.write(f"{QUARANTINE}/{stage}", day, frame, part, txn=txn)

    def _commit(
        self,
        asset: str,
        frame: pl.DataFrame,
        days: list[str] | None,
        predicate: str | None,
        txn: tuple[str, int] | None,
        *,
        part: str = DAY_PART,
    ) -> WriteResult:
        with tracing.span(
            "lake commit",
            {
                "nlp.table": asset,
                "nlp.rows": frame.height,
                "nlp.part": part,
                "nlp.days": len(days) if days is not None else 0,
            },
        ) as span:
            result = self._commit_retried(asset, frame, days, predicate, txn, part=part)
            span.set_attributes(
                tracing.clean_attributes(
                    {"nlp.table_version": result.version, "nlp.commit_skipped": result.skipped}
                )
            )
            return result

    def _commit_retried(
        self,
        asset: str,
        frame: pl.DataFrame,
        days: list[str] | None,
        predicate: str | None,
        txn: tuple[str, int] | None,
        *,
        part: str = DAY_PART,
    ) -> WriteResult:
        uri = self.table_uri(asset)
        if days is not None:
            if self.lease is not None:
                for day in days:
                    self.lease.hold(day)
            frame = _with_keys(asset, frame, days, part)
        for attempt in range(COMMIT_ATTEMPTS):
            table = self.table(asset)
            if txn is not None and table is not None:
                held = table.transaction_version(txn[0])
                if held is not None and held >= txn[1]:
                    return WriteResult(uri, table.version(), 0, skipped=True)
            data = _to_delta(frame, _arrow_schema(table))
            properties = CommitProperties(
                custom_metadata=self._commit_info(part, days),
                app_transactions=(
                    [Transaction(txn[0], txn[1], int(time.time() * 1000))] if txn else None
                ),
                max_commit_retries=0 if txn else None,
            )
            try:
                write_deltalake(
                    table if table is not None else uri,
                    data,
                    mode="overwrite",
                    partition_by=[PARTITION] if days is not None else None,
                    predicate=predicate,
                    # merge only when the frame adds or changes columns (it costs a commit
                    # about 2 ms: bench.lake)
                    schema_mode=None if _same_columns(data.schema, table) else "merge",
                    storage_options=self.storage_options,
                    commit_properties=properties,
                    writer_properties=_WRITER,
                    configuration=None if table is not None else TABLE_CONFIGURATION,
                )
            except CommitFailedError as error:
                # another writer committed a conflicting change meanwhile (same part or day, or
                # this app id): apply ours again on top of theirs, as if written after it
                if attempt + 1 == COMMIT_ATTEMPTS:
                    raise
                _logger.info("%s: commit conflict (%s), writing again", asset, error)
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
                continue
            except Exception as error:
                if table is None and "already exists" in str(error).lower():
                    continue  # another writer created the table first
                raise
            # the write moved `table` to its own commit; a new table is loaded once
            written = table if table is not None else self.table(asset)
            return WriteResult(uri, None if written is None else written.version(), frame.height)
        raise AssertionError("unreachable")

    def _commit_info(self, part: str, days: Iterable[str] | None) -> dict[str, str]:
        """What a commit records of who wrote it: the run, the days and part, the step's
        trace."""
        info = {COMMIT_PART: part, COMMIT_DAYS: ",".join(days or ())}
        if self.run_id:
            info[COMMIT_RUN_ID] = self.run_id
        trace_id, _ = tracing.current_ids()
        if trace_id:
            info[COMMIT_TRACE_ID] = trace_id
        return info

    def runs(self, asset: str, day: str, part: str | None = None) -> list[dict[str, Any]]:
        """The commits that wrote `day` of `asset` (its `part` only, or the whole day), oldest
        first: version, time, operation, run id, part and trace id as the writers recorded them.
        Reads the log since its oldest kept entry (vacuum's retention bounds it)."""
        table = self.table(asset)
        if table is None:
            return []
        found = []
        for entry in table.history():
            written = entry.get(COMMIT_PART)
            if day not in str(entry.get(COMMIT_DAYS, "")).split(",") or (
                part and written not in (part, DAY_PART)
            ):
                continue
            found.append(
                {
                    "version": entry.get("version"),
                    "time": entry.get("timestamp"),
                    "operation": entry.get("operation"),
                    "run_id": entry.get(COMMIT_RUN_ID),
                    "part": written,
                    "trace_id": entry.get(COMMIT_TRACE_ID),
                }
            )
        return sorted(found, key=lambda e: e["version"] or 0)

    def document_runs(self, doc_id: str, day: str, raw_table: str) -> dict[str, Any]:
        """Where a document went: its part and trace context in `raw_table`, and every commit
        of that day and part to any table (`runs`), oldest first, with the table's name."""
        raw = self.find(raw_table, [day], "doc_id", doc_id)
        if not raw.height:
            return {"doc_id": doc_id, "day": day, "part": None, "traceparent": None, "runs": []}
        row = raw.row(0, named=True)
        part = row.get("part") or DAY_PART
        commits = [
            {"table": table, **commit}
            for table in self.tables()
            if self.is_daily(table)
            for commit in self.runs(table, day, part)
        ]
        commits.sort(key=lambda c: (c["time"] or 0, c["table"]))
        return {
            "doc_id": doc_id,
            "day": day,
            "part": part,
            "traceparent": row.get("traceparent"),
            "runs": commits,
        }

    def commit_files(
        self,
        asset: str,
        days: Iterable[str | date],
        files: Iterable[FileAdd],
        schema: pa.Schema,
    ) -> WriteResult:
        """Files already written into the table's day folders (in `delta_arrow`'s types, without
        the `ingest_date` column) replace `days` in one commit (`create_write_transaction`,
        overwrite of those partitions); a day of `days` without files ends up empty. `schema`
        is the table's, with `ingest_date`. Holds the lease of every day, and a commit that
        loses a race is tried again, as `write` does."""
        wanted = sorted({_iso_day(d) for d in days})
        files = list(files)
        stray = sorted({f.day for f in files} - set(wanted))
        if stray:
            raise ValueError(f"{asset}: files of days {stray[:5]} outside the days {wanted}")
        if self.lease is not None:
            for day in wanted:
                self.lease.hold(day)
        uri = self.table_uri(asset)
        now = int(time.time() * 1000)
        actions: list[AddAction | RemoveAction] = [
            AddAction(f.path, f.size, {PARTITION: f.day}, now, True, f.stats) for f in files
        ]
        for attempt in range(COMMIT_ATTEMPTS):
            table = self.table(asset) or DeltaTable.create(
                uri,
                schema,
                mode="ignore",  # another writer may create it first
                partition_by=[PARTITION],
                configuration=TABLE_CONFIGURATION,
                storage_options=self.storage_options,
            )
            try:
                table.create_write_transaction(
                    actions,
                    mode="overwrite",
                    schema=schema,
                    partition_by=[PARTITION],
                    partition_filters=[(PARTITION, "in", wanted)],
                    commit_properties=CommitProperties(
                        custom_metadata=self._commit_info(DAY_PART, wanted)
                    ),
                )
            except CommitFailedError as error:
                if attempt + 1 == COMMIT_ATTEMPTS:
                    raise
                _logger.info("%s: commit conflict (%s), committing again", asset, error)
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
                continue
            written = self.table(asset)
            rows = sum(f.rows for f in files)
            return WriteResult(uri, None if written is None else written.version(), rows)
        raise AssertionError("unreachable")

    @staticmethod
    def delta_arrow(frame: pl.DataFrame, existing: pa.Schema | None = None) -> pa.Table:
        """The frame as Arrow in the types the lake stores (Delta's), each changed column
        carrying its polars dtype in its field metadata: what `write` commits, for writers
        that write the Parquet files themselves (`commit_files`)."""
        return _to_delta(frame, existing)

    # reading ---------------------------------------------------------------------------------
    def read_part(
        self, asset: str, day: str | date | None, part: str = DAY_PART, *, as_of: AsOf = None
    ) -> pl.DataFrame:
        """One part of a day (``day``: the whole day), or an unpartitioned asset whole."""
        table = self._existing(asset, as_of)
        if day is None:
            return _from_delta(table, pl.scan_delta(table).collect())
        _check_part(part)
        if part == DAY_PART:
            return self.read_day(asset, day, as_of=as_of)
        return self._scan(table, [_iso_day(day)], None, pl.col(PART_COLUMN) == part)

    def read_parts(
        self,
        asset: str,
        day: str | date,
        *,
        columns: list[str] | None = None,
        as_of: AsOf = None,
    ) -> dict[str, pl.DataFrame]:
        """Every part of the day by name, all of one table version (empty if no data)."""
        table = self.table(asset, as_of)
        if table is None:
            return {}
        wanted = None if columns is None else [*columns, PART_COLUMN]
        frame = self._scan(table, [_iso_day(day)], wanted, None, keep_part=True)
        if not frame.height:
            return {}
        return {
            str(name): group.drop(PART_COLUMN)
            for (name,), group in sorted(frame.group_by(PART_COLUMN), key=lambda g: str(g[0][0]))
        }

    def read_day(
        self,
        asset: str,
        day: str | date,
        *,
        missing_ok: bool = False,
        columns: list[str] | None = None,
        exclude_parts: Iterable[str] = (),
        as_of: AsOf = None,
    ) -> pl.DataFrame:
        """All parts of the day as one frame (one table version); `exclude_parts` leaves some
        out (a micro-batch looking at the rest of its day)."""
        table = self.table(asset, as_of)
        if table is None:
            if missing_ok:
                return pl.DataFrame()
            raise FileNotFoundError(
                f"{asset} has no table at {self.table_uri(asset)}: materialise it first"
            )
        excluded = sorted(set(exclude_parts))
        where = ~pl.col(PART_COLUMN).is_in(excluded) if excluded else None
        return self._scan(table, [_iso_day(day)], columns, where)

    def read_day_columns(
        self,
        asset: str,
        day: str | date,
        columns: list[str],
        *,
        exclude_parts: Iterable[str] = (),
    ) -> pl.DataFrame:
        """`columns` of every part of the day but `exclude_parts`: what a micro-batch needs of
        the rest of its day (ids and content hashes already there). Reads those columns only;
        once the day is compacted, from a few files. Through polars' Delta scan of the table
        version loaded (the day's files from its log, a file per part until compaction): on a
        day of 100 parts several times faster than the pyarrow dataset `read_day` uses
        (`bench.lake`)."""
        table = self.table(asset)
        if table is None:
            return pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
        stored = {f.name for f in table.schema().fields}
        excluded = sorted(set(exclude_parts))
        scan = pl.scan_delta(table).filter(pl.col(PARTITION) == date.fromisoformat(_iso_day(day)))
        if excluded:
            scan = scan.filter(~pl.col(PART_COLUMN).is_in(excluded))
        return _from_delta(table, scan.select([c for c in columns if c in stored]).collect())

    def read_days(
        self,
        asset: str,
        days: Iterable[str | date],
        *,
        columns: list[str] | None = None,
        as_of: AsOf = None,
    ) -> pl.DataFrame:
        """Several days as one frame, from one table version (no table: an empty frame)."""
        table = self.table(asset, as_of)
        if table is None:
            return pl.DataFrame()
        return self._scan(table, sorted({_iso_day(d) for d in days}), columns, None)

    def read_quarantine(self, stage: str, day: str | date, *, as_of: AsOf = None) -> pl.DataFrame:
        return self.read_day(f"{QUARANTINE}/{stage}", day, missing_ok=True, as_of=as_of)

    def find(self, asset: str, days: Iterable[str | date], column: str, value: Any) -> pl.DataFrame:
        """The rows of those days whose `column` equals `value` (a document by id): the filter
        is pushed into the scan, so files whose statistics rule the value out are skipped."""
        table = self.table(asset)
        if table is None or column not in {f.name for f in table.schema().fields}:
            return pl.DataFrame()
        wanted = sorted({_iso_day(d) for d in days})
        return self._scan_pruned(table, wanted, pc.field(column) == value)

    def part_names(self, asset: str, day: str | date) -> list[str]:
        """The parts the day holds rows of."""
        table = self.table(asset)
        if table is None:
            return []
        frame = self._scan(table, [_iso_day(day)], [PART_COLUMN], None, keep_part=True)
        return sorted(set(frame[PART_COLUMN].to_list())) if frame.width else []

    def files(self, asset: str, days: Iterable[str | date]) -> list[str]:
        """The live Parquet files of those days, per the table's log (for engines that read
        files themselves: each lacks the `ingest_date` column, which is its folder's name)."""
        table = self.table(asset)
        if table is None:
            return []
        wanted = sorted({_iso_day(d) for d in days})
        if PARTITION not in table.metadata().partition_columns:
            return sorted(table.file_uris())
        return sorted(table.file_uris(file_pruning_predicate=[(PARTITION, "in", wanted)]))

    def day_rows(self, asset: str, day: str | date) -> int:
        """The day's rows, from the statistics in the table's log (no data file is read)."""
        return self.rows_by_day(asset).get(_iso_day(day), 0)

    def rows_by_day(self, asset: str, *, as_of: AsOf = None) -> dict[str, int]:
        """Rows per day of a daily table, from its log's statistics."""
        table = self.table(asset, as_of)
        if table is None:
            return {}
        actions = pl.from_arrow(pa.table(table.get_add_actions(flatten=True)))
        assert isinstance(actions, pl.DataFrame)
        column = f"partition.{PARTITION}"
        if not actions.height or column not in actions.columns:
            return {}
        counts = actions.group_by(pl.col(column).cast(pl.String)).agg(pl.col("num_records").sum())
        return {str(day): int(rows) for day, rows in counts.iter_rows() if rows}

    def _existing(self, asset: str, as_of: AsOf) -> DeltaTable:
        table = self.table(asset, as_of)
        if table is None:
            raise FileNotFoundError(
                f"{asset} has no table at {self.table_uri(asset)}: materialise it first"
            )
        return table

    def _scan(
        self,
        table: DeltaTable,
        days: list[str],
        columns: list[str] | None,
        where: pl.Expr | None,
        *,
        keep_part: bool = False,
    ) -> pl.DataFrame:
        """Those days of one loaded table version through polars' Delta scan (the files from
        the log, partition and statistics pruning, only the columns asked for)."""
        stored = [f.name for f in table.schema().fields]
        scan = pl.scan_delta(table)
        if PARTITION in table.metadata().partition_columns:
            scan = scan.filter(pl.col(PARTITION).is_in([date.fromisoformat(d) for d in days]))
        if where is not None:
            scan = scan.filter(where)
        if columns is not None:
            scan = scan.select([c for c in columns if c in stored])
        return _from_delta(table, scan.collect(), keep_part=keep_part)

    def _scan_pruned(
        self, table: DeltaTable, days: list[str], where: pc.Expression
    ) -> pl.DataFrame:
        """A filtered scan that opens only the files whose statistics in the log allow a match
        (`find`: a document by id): the pyarrow dataset delta-rs builds carries each file's
        min/max as its guarantee."""
        dataset = table.to_pyarrow_dataset(file_pruning_predicate=[(PARTITION, "in", days)])
        dates = pa.array([date.fromisoformat(d) for d in days], pa.date32())
        return _from_delta(table, dataset.to_table(filter=pc.field(PARTITION).isin(dates) & where))

    # maintenance -----------------------------------------------------------------------------
    def compact(self, asset: str, day: str | date) -> dict[str, Any]:
        """Rewrite the day's small files (micro-batches) into few large ones; one commit that
        changes no row (`optimize.compact` on that partition)."""
        table = self.table(asset)
        if table is None:
            return {}
        return table.optimize.compact(partition_filters=[(PARTITION, "=", _iso_day(day))])

    def vacuum(self, asset: str, retention_hours: float) -> list[str]:
        """Delete the files no version younger than `retention_hours` needs (superseded parts,
        compacted files, a killed writer's orphans); returns them."""
        table = self.table(asset)
        if table is None:
            return []
        foreign = _foreign_entries(self.root / asset)
        if foreign:
            raise RuntimeError(
                f"{asset}: not vacuumed: its folder holds files that are not the table's "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): a lake of the "
                "old layout (run `nlp lake migrate` first) or files put there by hand"
            )
        # full: also the files no commit ever listed (a writer killed before its commit)
        removed = table.vacuum(
            retention_hours=int(retention_hours),
            dry_run=False,
            enforce_retention_duration=False,
            full=True,
        )
        return removed + self._remove_staging(asset, retention_hours)

    def _remove_staging(self, asset: str, retention_hours: float) -> list[str]:
        """On local disk delta-rs writes a data file as `<name>#<n>` and renames it: a writer
        killed in between leaves that staging file, which no vacuum lists. Older than the
        retention, it goes too."""
        folder = self.root / asset
        if folder.protocol not in ("", "file", "local"):
            return []
        cutoff = time.time() - retention_hours * 3600
        removed = []
        for path in Path(folder.path).rglob("*.parquet#*"):
            if _STAGING.search(path.name) and path.stat().st_mtime <= cutoff:
                path.unlink(missing_ok=True)
                removed.append(path.relative_to(folder.path).as_posix())
        return removed

    def checkpoint(self, asset: str) -> None:
        """Write a log checkpoint (readers replay the log from it) and drop expired log files."""
        table = self.table(asset)
        if table is not None:
            table.create_checkpoint()
            table.cleanup_metadata()

    def tables(self) -> list[str]:
        """Every table under the root: `<asset>` and `quarantine/<stage>` (`_locks` is not)."""
        found: list[str] = []
        for child in _children(self.root):
            if child.name == QUARANTINE:
                found += [f"{QUARANTINE}/{c.name}" for c in _children(child) if _is_table(c)]
            elif _is_table(child):
                found.append(child.name)
        return sorted(found)

    def is_daily(self, asset: str) -> bool:
        """Whether the table is partitioned by day (stage assets, quarantines)."""
        table = self.table(asset)
        return table is not None and PARTITION in table.metadata().partition_columns


def _children(folder: UPath) -> list[UPath]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith((".", "_"))]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _foreign_entries(folder: UPath) -> list[str]:
    """What a full vacuum would delete that is not a Delta data file: old-layout days
    (`YYYY-MM-DD/`, `data.parquet`), checkpoints or anything else put in the table's folder."""
    found = []
    for child in _children(folder):
        name = child.name
        data_folder = name.startswith(f"{PARTITION}=")
        data_file = (
            (name.endswith(".parquet") or _STAGING.search(name) is not None)
            and name != "data.parquet"
            and child.is_file()
        )
        if not (data_folder or data_file):
            found.append(name)
    return sorted(found)


def _is_table(folder: UPath) -> bool:
    return (folder / "_delta_log").exists()


# the frame a stage wrote <-> what Delta stores -------------------------------------------------
def _iso_day(day: str | date) -> str:
    try:
        return date.fromisoformat(str(day)).isoformat()
    except ValueError:
        raise ValueError(f"a lake day is YYYY-MM-DD, got {str(day)[:40]!r}") from None


def _as_datetime(value: datetime | str) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_part(part: str) -> None:
    if not _PART_NAME.match(part):
        raise ValueError(f"invalid part name {part!r}: use letters, digits and . _ = -")


def _with_keys(asset: str, frame: pl.DataFrame, days: list[str], part: str) -> pl.DataFrame:
    """The frame with its partition and part columns: `ingest_date` checked against the days
    written (or added, for a frame without one), `part` set."""
    if PART_COLUMN in frame.columns:
        raise ValueError(f"{asset}: column {PART_COLUMN!r} is the lake's own; rename it")
    if PARTITION in frame.columns:
        column = frame[PARTITION]
        keys = (
            column.str.to_date(strict=False) if column.dtype == pl.String else column.cast(pl.Date)
        )
        allowed = pl.Series([date.fromisoformat(d) for d in days], dtype=pl.Date)
        stray = frame.filter(~keys.is_in(allowed.implode()) | keys.is_null())
        if stray.height:
            found = sorted({str(v) for v in stray[PARTITION].to_list()})
            raise ValueError(f"{asset}: rows of days {found[:5]} outside the days written {days}")
        if frame.schema[PARTITION] != pl.Date:
            frame = frame.with_columns(keys.alias(PARTITION))
    else:
        if len(days) != 1:
            raise ValueError(f"{asset}: a frame covering {len(days)} days needs an ingest_date")
        frame = frame.with_columns(
            pl.lit(date.fromisoformat(days[0])).alias(PARTITION).cast(pl.Date)
        )
        frame = frame.with_columns(pl.col(PARTITION).alias(f"{PARTITION}\x00added"))
    return frame.with_columns(pl.lit(part, dtype=pl.String).alias(PART_COLUMN))


def _same_columns(schema: pa.Schema, table: DeltaTable | None) -> bool:
    """Whether the data has exactly the table's columns and types (a new table: yes)."""
    stored = _arrow_schema(table)
    if stored is None:
        return True
    return stored.names == schema.names and all(
        _plain_type(stored.field(n).type) == _plain_type(schema.field(n).type) for n in schema.names
    )


def _plain_type(kind: pa.DataType) -> str:
    """A type without Arrow's encodings (large, view) and child names, as Delta sees it."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return "string"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return "binary"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind):
        return f"list<{_plain_type(kind.value_type)}>"
    if pa.types.is_struct(kind):
        inner = ",".join(f"{f.name}:{_plain_type(f.type)}" for f in kind)
        return f"struct<{inner}>"
    return str(kind)


def _arrow_schema(table: DeltaTable | None) -> pa.Schema | None:
    if table is None:
        return None
    return pa.schema(table.schema().to_arrow())


def _delta_dtype(dtype: PolarsDataType) -> pl.DataType:
    """The polars dtype a column is stored as (Delta has no unsigned, fixed-size or null type)."""
    if isinstance(dtype, type):
        dtype = dtype()
    if isinstance(dtype, pl.Array):
        return pl.List(_delta_dtype(dtype.inner))
    if isinstance(dtype, pl.List):
        return pl.List(_delta_dtype(dtype.inner))
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: _delta_dtype(f.dtype) for f in dtype.fields})
    if dtype in (pl.UInt8, pl.UInt16):
        return pl.Int32()
    if dtype in (pl.UInt32, pl.UInt64):
        return pl.Int64()
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.String()
    if isinstance(dtype, pl.Datetime) and dtype.time_unit == "ns":
        return pl.Datetime("us", dtype.time_zone)
    assert isinstance(dtype, pl.DataType)
    return dtype


def _dtype_json(dtype: PolarsDataType) -> Any:
    if isinstance(dtype, type):
        dtype = dtype()
    if isinstance(dtype, pl.Array):
        return {"array": _dtype_json(dtype.inner), "size": dtype.size}
    if isinstance(dtype, pl.List):
        return {"list": _dtype_json(dtype.inner)}
    if isinstance(dtype, pl.Struct):
        return {"struct": [[f.name, _dtype_json(f.dtype)] for f in dtype.fields]}
    if isinstance(dtype, pl.Datetime):
        return {"datetime": dtype.time_unit, "tz": dtype.time_zone}
    if isinstance(dtype, pl.Enum):
        return {"enum": dtype.categories.to_list()}
    return type(dtype).__name__ if isinstance(dtype, pl.DataType) else str(dtype)


def _dtype_from_json(value: Any) -> pl.DataType:
    if isinstance(value, str):
        found = getattr(pl, value, None)
        if not (isinstance(found, type) and issubclass(found, pl.DataType)):
            raise ValueError(f"unknown stored dtype {value!r}")
        return found()
    if "array" in value:
        return pl.Array(_dtype_from_json(value["array"]), int(value["size"]))
    if "list" in value:
        return pl.List(_dtype_from_json(value["list"]))
    if "struct" in value:
        return pl.Struct({name: _dtype_from_json(inner) for name, inner in value["struct"]})
    if "datetime" in value:
        return pl.Datetime(value["datetime"], value["tz"])
    if "enum" in value:
        return pl.Enum(value["enum"])
    raise ValueError(f"unknown stored dtype {value!r}")


def _to_delta(frame: pl.DataFrame, existing: pa.Schema | None) -> pa.Table:
    """The frame as Arrow in Delta's types, each changed column carrying its polars dtype."""
    added = f"{PARTITION}\x00added"
    casts, notes = {}, {}
    for name, dtype in frame.schema.items():
        if name == added:
            continue
        if dtype == pl.Null:
            known = (
                existing.field(name).type
                if existing is not None and name in existing.names
                else None
            )
            target: pl.DataType = (
                pl.from_arrow(pa.array([], known)).dtype if known is not None else pl.String()  # type: ignore[union-attr]
            )
            casts[name] = target
            continue
        stored = _delta_dtype(dtype)
        if stored != dtype:
            casts[name] = stored
            notes[name] = json.dumps(_dtype_json(dtype))
    lake_added = added in frame.columns
    out = frame.drop(added) if lake_added else frame
    if casts:
        out = out.with_columns(pl.col(n).cast(t) for n, t in casts.items())
    table = out.to_arrow()
    fields = []
    for field in table.schema:
        metadata = dict(field.metadata or {})
        if field.name in notes:
            metadata[DTYPE_KEY.encode()] = notes[field.name].encode()
        if lake_added and field.name == PARTITION:
            metadata[ADDED_KEY.encode()] = b"true"
        fields.append(field.with_metadata(metadata) if metadata else field)
    return table.cast(pa.schema(fields))


def _from_delta(
    table: DeltaTable, data: pa.Table | pl.DataFrame, *, keep_part: bool = False
) -> pl.DataFrame:
    """Back to the frame the stage wrote: the polars dtypes restored, the lake's columns gone."""
    frame = data if isinstance(data, pl.DataFrame) else pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    drop = [] if keep_part or PART_COLUMN not in frame.columns else [PART_COLUMN]
    casts = {}
    for field in table.schema().fields:
        metadata = field.metadata or {}
        if field.name not in frame.columns:
            continue
        if metadata.get(ADDED_KEY) == "true":
            drop.append(field.name)
        elif DTYPE_KEY in metadata:
            casts[field.name] = _dtype_from_json(json.loads(str(metadata[DTYPE_KEY])))
    if casts:
        frame = frame.with_columns(pl.col(n).cast(t) for n, t in casts.items())
    # the table's column order (a Delta scan puts the partition column last)
    order = [f.name for f in table.schema().fields if f.name in frame.columns]
    frame = frame.select(order + [c for c in frame.columns if c not in order])
    return frame.drop(drop) if drop else frame
