"""The lake as a Dagster resource, and the IO manager every stage asset is stored through."""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any

import dagster as dg
import polars as pl
from opentelemetry import trace
from pydantic import Field, PrivateAttr

from nlp_assets import settings, tracing
from nlp_assets.engines.sink import Committed
from nlp_assets.kernels.clean import mask_personal_data
from nlp_assets.lake import DAY_PART, DayLocks, Lake, WriteResult

#: Run tag naming the part a micro-batch run covers; runs without it work on whole days.
PART_TAG = "nlp/part"
#: Input metadata asking for the whole day even in a micro-batch run (aggregates, reports).
SCOPE_DAY = {"scope": "day"}

PREVIEW_ROWS = 5
PREVIEW_CHARS = 80
#: Characters of a cell that are masked before it is cut to PREVIEW_CHARS (an address or a
#: number is only recognised whole, so masking runs on more than is shown).
PREVIEW_SCAN_CHARS = 4_096


#: Run tags naming the days a run works on: one partition, or a single-run backfill's range.
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def run_days(tags: Mapping[str, str]) -> list[str]:
    """The days a run works on, from its tags: its partition, or every day of its range (a
    range run has no `dagster/partition` tag); none for a run that is not daily-partitioned."""
    try:
        if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
            first = date.fromisoformat(tags[RANGE_START_TAG])
            last = date.fromisoformat(tags[RANGE_END_TAG])
            return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        if PARTITION_TAG in tags:
            return [date.fromisoformat(tags[PARTITION_TAG]).isoformat()]
    except ValueError:  # not a day
        pass
    return []


class LakeResource(dg.ConfigurableResource):
    """Root of the Delta Lake tables: a local folder or an object-store URL (s3://, gs://,
    abfs://). Access to the store comes from the environment only, never from this config: for
    s3:// the standard AWS_* variables (credentials, `AWS_REGION`, `AWS_ENDPOINT_URL` for an
    S3-compatible server, `AWS_ALLOW_HTTP` for a plain-http one), which delta-rs reads itself
    and `settings.lake_filesystem_options` hands to s3fs (docs/lake.md "Object storage").

    In a run, it takes the lake's lease of every day the run works on (`run_days`) before the
    run's first step, waiting with a log line while another run holds one, and every write of
    a day checks the lease is still the run's (`nlp_assets.lake.DayLocks` says why this is a
    lock in the lake: no Dagster concurrency setting makes a range run, such as a
    `backfill_pipeline_spark` run, exclude the runs of its days). The lease is the run's until
    the run finishes on the instance, or, for a waiter whose instance does not know the run,
    until none of its processes has beaten its heartbeat for `lock_ttl_seconds`.
    """

    root: str = Field(description="Lake root folder or URL.")
    lock_wait_seconds: float = Field(
        default=6 * 3600.0,
        description="How long a run waits for another run's lease on one of its days before "
        "it fails (and is retried).",
    )
    lock_ttl_seconds: float = Field(
        default=60.0,
        description="A lease whose run the instance does not know is free once no process of "
        "that run has renewed its heartbeat for this long.",
    )
    _locks: DayLocks | None = PrivateAttr(default=None)
    _kafka_txn: tuple[str, str, int] | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        if run is None:  # a sensor, a schedule, a unit test: no run, no lease
            return
        # this environment's own Dagster instance, before the run writes anything
        settings.check_instance(settings.environment())
        self._locks = _join_locks(self, run.run_id, context)
        self._kafka_txn = kafka_transaction(run.tags)
        days = run_days(run.tags)
        try:
            self._locks.acquire(days)
        except BaseException:
            self.teardown_after_execution(context)
            raise

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._locks is not None:
            _leave_locks(self.root, self._locks.owner)
            self._locks = None

    def lake(self) -> Lake:
        """The lake; in a run, bound to the run's leases (writes of a day hold its lease) and,
        in a Kafka micro-batch, to its range's Delta app transaction (`kafka_transaction`)."""
        return Lake(
            self.root,
            lease=self._locks,
            part_txn=self._kafka_txn,
            run_id=self._locks.owner if self._locks is not None else None,
        )


def kafka_transaction(tags: Mapping[str, str]) -> tuple[str, str, int] | None:
    """(part, app id, version) of a Kafka micro-batch run's writes of its own part, the way
    Spark Structured Streaming makes sink writes exactly once: every table commit of the
    range carries a Delta app transaction, and a table that already holds it refuses the
    commit as a no-op (a replayed or zombie run of the range). The app id is the range's
    topic, partition, generation and first offset (ranges of one partition run side by side
    and finish in any order, so one app id per partition would skip an earlier range
    finishing late); the version is its end offset, doubled, plus one in dead-letter mode, so a
    dead-letter run replaces what an ordinary attempt of its range wrote, and an ordinary
    attempt that ends after it is refused."""
    from nlp_assets.kafka.messages import OffsetRange, dead_letter_mode_reason

    offsets = OffsetRange.from_tags(tags)
    if offsets is None:
        return None
    app_id = f"nlp-kafka:{offsets.topic}:{offsets.partition}:g{offsets.generation}:{offsets.start}"
    dead_letter = dead_letter_mode_reason(tags) is not None
    return offsets.part, app_id, 2 * offsets.end + int(dead_letter)


#: The leases this process holds, per (lake root, run id), with how many resources use them:
#: the IO manager's lake and the assets' lake share one heartbeat.
_LOCKS: dict[tuple[str, str], tuple[DayLocks, int]] = {}
_LOCKS_GUARD = threading.Lock()


def _join_locks(resource: LakeResource, run_id: str, context: dg.InitResourceContext) -> DayLocks:
    key = (resource.root, run_id)
    with _LOCKS_GUARD:
        locks, users = _LOCKS.get(key) or (
            DayLocks(
                resource.root,
                run_id,
                is_finished=_run_finished(context.instance),
                ttl_seconds=resource.lock_ttl_seconds,
                wait_seconds=resource.lock_wait_seconds,
                log=context.log.info if context.log else None,
            ),
            0,
        )
        _LOCKS[key] = (locks, users + 1)
    return locks


def _leave_locks(root: str, run_id: str) -> None:
    with _LOCKS_GUARD:
        locks, users = _LOCKS.pop((root, run_id), (None, 0))
        if locks is not None and users > 1:
            _LOCKS[(root, run_id)] = (locks, users - 1)
            return
    if locks is not None:
        locks.close()  # the last user in this process: its heartbeat stops


def _run_finished(instance: dg.DagsterInstance | None) -> Callable[[str], bool | None] | None:
    """Whether a lease owner's run has finished, per the instance (None: not a run it knows)."""
    if instance is None:
        return None

    def finished(run_id: str) -> bool | None:
        run = instance.get_run_by_id(run_id)
        return None if run is None else run.is_finished

    return finished


def run_part(context: dg.InputContext | dg.OutputContext | dg.AssetExecutionContext) -> str:
    """The part the current run writes: its `nlp/part` tag, or the whole day."""
    if isinstance(context, dg.AssetExecutionContext):
        return context.run.tags.get(PART_TAG, DAY_PART)
    try:
        return context.step_context.run_tags.get(PART_TAG, DAY_PART)
    except dg.DagsterInvariantViolationError:  # contexts built in unit tests have no step
        return DAY_PART


def markdown_preview(frame: pl.DataFrame) -> str:
    """The first rows as a markdown table, safe for every viewer of the event log.

    Every cell that can hold document text (strings, bytes, nested values) is masked with the
    cleaning kernel's masks (e-mails, URLs, phone numbers; control and invisible characters
    removed), cut to PREVIEW_CHARS and markdown-escaped, so no cell shows personal data,
    breaks the table or injects markup.
    """
    head = frame.head(PREVIEW_ROWS)
    if not head.width:
        return "_empty_"
    plain = [name for name, dtype in head.schema.items() if _plain(dtype)]
    columns = [head[name].to_list() for name in head.columns]
    texts = [
        [_as_text(v) for v in values] if name not in plain else None
        for name, values in zip(head.columns, columns, strict=True)
    ]
    flat = [t for col in texts if col is not None for t in col]
    masked = iter(mask_personal_data(flat))
    cells = [
        [_short(str(v)) for v in values] if col is None else [_short(next(masked)) for _ in col]
        for values, col in zip(columns, texts, strict=True)
    ]
    lines = ["| " + " | ".join(_short(name) for name in head.columns) + " |"]
    lines.append("|" + "---|" * head.width)
    lines += ["| " + " | ".join(row) + " |" for row in zip(*cells, strict=True)]
    return "\n".join(lines)


def _plain(dtype: pl.DataType) -> bool:
    """Numbers, dates, times and booleans carry no document text (and must not be read as
    phone numbers: 1234.5678)."""
    return dtype.is_numeric() or dtype.is_temporal() or dtype == pl.Boolean


def _as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value)[:PREVIEW_SCAN_CHARS]


#: What could break a table cell or make live markup (a cell separator, a code span, a link or
#: image, HTML), written so it shows as itself. Emphasis characters are left: cosmetic only.
_MARKDOWN_ESCAPES = str.maketrans(
    {c: "\\" + c for c in "\\|`[]"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
)


def _short(value: Any) -> str:
    """One cell: whitespace runs (line breaks included) as one space, cut, then escaped (an
    escape is never cut in half)."""
    text = re.sub(r"\s+", " ", str(value)).strip()
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return text.translate(_MARKDOWN_ESCAPES)


def _catalog() -> Any:
    """`nlp_assets.catalog`, imported at the first output. Not an import statement: stage code
    versions hash the modules a stage imports (`conventions`), and every stage reaches this
    IO manager, so a reworded column description would mark every stage stale."""
    return importlib.import_module("nlp_assets.catalog")


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores polars DataFrames in the asset's Delta table (see `nlp_assets.lake`).

    Output: the run's part of the partition (whole day by default; always the whole day for an
    asset whose metadata is `SCOPE_DAY`), one commit, with the rows written, the day's rows
    (`dagster/partition_row_count`), the table version, column schema, lineage and a preview as
    metadata. Input: the run's part, or the whole day when the input asks for it with
    `AssetIn(metadata={"scope": "day"})`; several partitions come back as one frame.
    """

    lake: LakeResource

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | Committed) -> None:
        """Stores the output inside the step's span, which it ends (`stages.common.step_span`)."""
        span = tracing.release(tracing.step_key(context.run_id, context.asset_key.to_user_string()))
        if span is None:
            self._handle_output(context, obj)
            return
        try:
            with trace.use_span(span, end_on_exit=True):
                self._handle_output(context, obj)
        finally:
            tracing.flush()

    def _handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | Committed) -> None:
        if isinstance(obj, Committed):
            self._record_commit(context, obj)
            return
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()} must return a polars DataFrame")
        asset = "/".join(context.asset_key.path)
        lake = self.lake.lake()
        # An asset declared with metadata SCOPE_DAY (aggregates, reports) always computes the
        # whole day, so even in a micro-batch run it replaces the day instead of adding a part.
        whole_day = context.definition_metadata.get("scope") == "day"
        part = DAY_PART if whole_day else run_part(context)
        days: list[str] = []
        result: WriteResult
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            # A single-run backfill of a range: the run's days replaced in one commit.
            days = list(context.asset_partition_keys)
            result = lake.write_days(asset, days, obj)
        else:
            day = context.asset_partition_key if context.has_asset_partitions else None
            days = [day] if day else []
            result = lake.write(asset, day, obj, part)
        catalog = _catalog()

        metadata: dict[str, Any] = {
            "dagster/row_count": obj.height,
            # the frame's types, with the catalog's descriptions and constraints
            "dagster/column_schema": catalog.materialized_column_schema(context.asset_key, obj),
            "table_version": result.version,
            "path": dg.MetadataValue.path(result.uri),
            "preview": dg.MetadataValue.md(markdown_preview(obj)),
        }
        if result.skipped:
            metadata["kafka_commit_skipped"] = True  # the table already held this range
        if len(days) == 1:
            metadata["dagster/partition_row_count"] = lake.day_rows(asset, days[0])
        lineage = catalog.column_lineage(context.asset_key)
        if lineage is not None:
            metadata["dagster/column_lineage"] = lineage
        context.add_output_metadata(metadata)

    def _record_commit(self, context: dg.OutputContext, committed: Committed) -> None:
        """Rows the Spark executors wrote and the driver already committed
        (`engines.sink.Committed`): nothing is written again, the commit's metadata recorded."""
        asset = "/".join(context.asset_key.path)
        if committed.asset != asset:
            raise ValueError(f"{asset} returned a commit of {committed.asset}")
        lake = self.lake.lake()
        metadata: dict[str, Any] = {
            "dagster/row_count": committed.rows,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(n, t) for n, t in committed.columns.items()]
            ),
            "table_version": committed.write.version,
            "path": dg.MetadataValue.path(committed.write.uri),
            "files_committed": committed.files,
            "written_by": "spark executors",
        }
        if len(committed.days) == 1:
            metadata["dagster/partition_row_count"] = lake.day_rows(asset, committed.days[0])
        catalog = _catalog()
        lineage = catalog.column_lineage(context.asset_key)
        if lineage is not None:
            metadata["dagster/column_lineage"] = lineage
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        lake = self.lake.lake()
        asset = "/".join(context.asset_key.path)
        if not context.has_asset_partitions:
            return lake.read_part(asset, None)
        whole_day = context.definition_metadata.get("scope") == "day"
        part = DAY_PART if whole_day else run_part(context)
        if part == DAY_PART:
            days = list(context.asset_partition_keys)
            if not lake.exists(asset):
                raise FileNotFoundError(
                    f"{asset} has no table at {lake.table_uri(asset)}: materialise it first"
                )
            return lake.read_days(asset, days)
        frames = [lake.read_part(asset, day, part) for day in context.asset_partition_keys]
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
