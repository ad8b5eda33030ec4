"""Stage rows written into the lake by whoever computed them (Spark executors), committed by
the driver: the driver receives a few small rows per file, never the data.

An executor's batch of a stage's rows becomes one Parquet file per day, written straight into
the Delta table's day folder (`<table>/ingest_date=<day>/part-<uuid>.parquet`) in the types the
lake stores (`Lake.delta_arrow`), `part` = "day", without `ingest_date` (the folder names it,
as Delta keeps partition values out of the files). Each file comes back as one `FILE_SCHEMA`
row: its path, bytes, rows, day, Delta statistics, the table schema it was written in, and what
the stage wants to know of its rows (`summary`, the schema check's failures). The driver then
commits every file of the range in one Delta transaction replacing the range's days
(`Lake.commit_files`): a reader sees the range before or after, never files in between, and
files of a failed attempt that were never committed are orphans that `vacuum` removes.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from upath import UPath

from nlp_assets.lake import DAY_PART, PART_COLUMN, PARTITION, FileAdd, Lake, WriteResult

#: What an executor returns per file written.
FILE_SCHEMA: dict[str, pl.DataType] = {
    "path": pl.String(),
    "size": pl.Int64(),
    "rows": pl.Int64(),
    "day": pl.String(),
    "first": pl.String(),
    "stats": pl.String(),
    "schema": pl.String(),
    "summary": pl.String(),
}
ORDER = ["ingest_date", "doc_id"]
#: String statistics longer than this are left out of a file's stats (no truncated bounds).
MAX_STAT_CHARS = 64
#: Schema-check failure cases kept per stage (what the check's metadata shows).
FAILURE_CASES = 10
#: Summary keys that are not added up: the written frame's polars schema, failure examples.
COLUMNS_KEY, FAILURES_KEY, FAILURE_CASES_KEY = "_columns", "_schema_failures", "_failure_cases"

#: The pandera schema a frame is checked against (a function of the frame: the features'
#: embedding width comes from the data).
Check = Callable[[pl.DataFrame], Any]
#: Counts a stage reports about its rows (ints, floats, lists of names, {name: count}), added up
#: over every file by `merge_summaries`.
Summary = Callable[[pl.DataFrame], dict[str, Any]]


@dataclass(frozen=True)
class FileTarget:
    """What an executor needs to write a table's files: plain values, no lake or lease."""

    table_uri: str
    check: Check | None = None
    summary: Summary | None = None


@dataclass
class LakeSink:
    """Where a stage's rows go: `asset` of `lake` (the driver's, holding the run's leases),
    replacing `days` in one commit; `check` and `summary` run where the rows are written."""

    lake: Lake
    asset: str
    days: list[str]
    check: Check | None = None
    summary: Summary | None = None

    def target(self) -> FileTarget:
        return FileTarget(self.lake.table_uri(self.asset), self.check, self.summary)

    def commit(self, files: pl.DataFrame) -> Committed:
        """Every file of `files` (`FILE_SCHEMA` rows) replaces the sink's days, one commit."""
        files = files.sort("day", "first")
        adds = [
            FileAdd(row["path"], row["size"], row["rows"], row["day"], row["stats"])
            for row in files.iter_rows(named=True)
        ]
        summary = merge_summaries(json.loads(s) for s in files["summary"].to_list() if s)
        schemas = [s for s in files["schema"].to_list() if s]
        if schemas:
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(schemas[0])))
            result = self.lake.commit_files(self.asset, self.days, adds, schema)
        else:  # no rows at all: the days are emptied the ordinary way
            empty = pl.DataFrame(schema={PARTITION: pl.Date()})
            result = self.lake.write_days(self.asset, self.days, empty)
        return Committed(result, self.asset, list(self.days), len(adds), summary)

    def commit_frame(self, frame: pl.DataFrame) -> Committed:
        """A frame computed on the driver (an empty input), committed like the files."""
        target = self.target()
        if not frame.height:
            result = self.lake.write_days(self.asset, self.days, frame)
            return Committed(result, self.asset, list(self.days), 0, file_summary(frame, target))
        return self.commit(write_files(frame, target))


@dataclass(frozen=True)
class Committed:
    """A stage's rows already committed to its table (the value a Spark stage returns): the
    IO manager records its metadata and writes nothing (`resources.lake.LakeIOManager`)."""

    write: WriteResult
    asset: str
    days: list[str]
    files: int
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.write.rows

    @property
    def columns(self) -> dict[str, str]:
        """The stage frame's polars schema as the executors wrote it (name -> dtype)."""
        return dict(self.summary.get(COLUMNS_KEY) or {})

    @property
    def schema_failures(self) -> int:
        return int(self.summary.get(FAILURES_KEY, 0))

    @property
    def failure_cases(self) -> list[str]:
        return list(self.summary.get(FAILURE_CASES_KEY, []))


# executor side -----------------------------------------------------------------------------------
def write_files(frame: pl.DataFrame, target: FileTarget) -> pl.DataFrame:
    """`frame` (a stage's rows, any days) as one Parquet file per day in the table's day
    folders; one `FILE_SCHEMA` row per file (the batch's summary on its first)."""
    if not frame.height:
        return pl.DataFrame(schema=FILE_SCHEMA)
    order = [c for c in ORDER if c in frame.columns]
    frame = frame.sort(order)
    summary = json.dumps(file_summary(frame, target))
    rows: list[dict[str, Any]] = []
    for (day,), rows_of_day in frame.group_by(PARTITION, maintain_order=True):
        iso = day.isoformat() if isinstance(day, date) else str(day)
        keyed = rows_of_day.with_columns(pl.lit(DAY_PART, pl.String).alias(PART_COLUMN))
        table = Lake.delta_arrow(keyed)
        data = table.drop_columns([PARTITION])
        relative = f"{PARTITION}={iso}/part-{uuid.uuid4()}.parquet"
        path = UPath(target.table_uri) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as sink:
            pq.write_table(data, sink, compression="zstd")
        rows.append(
            {
                "path": relative,
                "size": path.stat().st_size,
                "rows": data.num_rows,
                "day": iso,
                "first": str(rows_of_day["doc_id"][0]) if "doc_id" in frame.columns else "",
                "stats": file_stats(data),
                "schema": base64.b64encode(table.schema.serialize().to_pybytes()).decode(),
                "summary": summary if not rows else "",
            }
        )
    return pl.DataFrame(rows, schema=FILE_SCHEMA)


def file_summary(frame: pl.DataFrame, target: FileTarget) -> dict[str, Any]:
    """The stage's summary of these rows, their schema check and their polars schema."""
    summary: dict[str, Any] = dict(target.summary(frame)) if target.summary else {}
    summary[COLUMNS_KEY] = {name: str(dtype) for name, dtype in frame.schema.items()}
    if target.check is not None and frame.height:
        import pandera.polars as pa_polars

        try:
            target.check(frame).validate(frame, lazy=True)
        except pa_polars.errors.SchemaErrors as errors:
            cases = errors.failure_cases
            summary[FAILURES_KEY] = cases.height
            summary[FAILURE_CASES_KEY] = [
                json.dumps(row, default=str)[:300]
                for row in cases.head(FAILURE_CASES).iter_rows(named=True)
            ]
    return summary


def file_stats(data: pa.Table) -> str:
    """Delta statistics of a file: rows, and null counts, minimum and maximum of each flat
    column (numbers, dates, short strings), which readers use to skip files."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for column, values in zip(data.schema, data.columns, strict=True):
        kind = column.type
        if pa.types.is_nested(kind):
            continue
        nulls[column.name] = values.null_count
        if values.null_count == len(values) or not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_date(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
        ):
            continue
        if pa.types.is_floating(kind) and pc.any(pc.is_nan(values)).as_py():
            continue
        low, high = (v.as_py() for v in pc.min_max(values).values())
        if isinstance(low, str) and max(len(low), len(high)) > MAX_STAT_CHARS:
            continue
        mins[column.name] = low.isoformat() if isinstance(low, date) else low
        maxs[column.name] = high.isoformat() if isinstance(high, date) else high
    stats = {"numRecords": data.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    return json.dumps(stats)


# driver side -------------------------------------------------------------------------------------
def merge_summaries(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Summaries of every file as one: numbers added, {name: count} added per name, lists
    joined (sorted, distinct); the schema and failure examples from the first that has them."""
    merged: dict[str, Any] = {}
    for summary in summaries:
        for key, value in summary.items():
            if key == COLUMNS_KEY:
                merged.setdefault(key, value)
            elif key == FAILURE_CASES_KEY:
                merged[key] = (merged.get(key, []) + list(value))[:FAILURE_CASES]
            elif isinstance(value, dict):
                into = merged.setdefault(key, {})
                for name, count in value.items():
                    into[name] = into.get(name, 0) + count
            elif isinstance(value, list):
                merged[key] = sorted(set(merged.get(key, [])) | set(value))
            else:
                merged[key] = merged.get(key, 0) + value
    return merged
