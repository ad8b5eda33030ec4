"""Reading results: the Postgres warehouse views when DATABASE_URL is set, else the lake.

Only public read functions are used: `nlp_assets.read` (the lake's read API), `Lake.read_quarantine`
and `warehouse_rows`' views (`v_predictions`, `v_aggregates`).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from nlp_assets import tracing
from nlp_assets.api.config import ApiSettings
from nlp_assets.lake import QUARANTINE, Lake

PREDICTIONS = "predictions"
#: The raw stage's asset (`nlp_assets.kafka.raw.RAW_ASSET`; not imported: it pulls Kafka in).
RAW_ASSET = "raw_text"


class WarehouseUnavailable(ConnectionError):
    """The Postgres warehouse could not answer (503)."""


def parse_day(day: str) -> str:
    try:
        return date.fromisoformat(day).isoformat()
    except ValueError:
        raise ValueError(f"day must be YYYY-MM-DD, got {day[:40]!r}") from None


def _read():
    """`nlp_assets.read`, imported on the first lake read: it pulls spaCy in (through the
    aggregates' schema), ~10 s that API start-up and the warehouse path need not pay."""
    from nlp_assets import read

    return read


class Results:
    def __init__(self, config: ApiSettings):
        self.config = config
        self.lake = Lake(config.lake_dir)

    # connections -------------------------------------------------------------------------
    def _connect(self):
        import psycopg2

        return psycopg2.connect(
            self.config.database_url, connect_timeout=5, application_name="nlp_api"
        )

    def _query(self, query, params: list[Any]) -> pl.DataFrame:
        import psycopg2

        try:
            conn = self._connect()
            try:
                with conn, conn.cursor() as cursor:
                    cursor.execute(query, params)
                    names = [c.name for c in cursor.description]
                    rows = cursor.fetchall()
            finally:
                conn.close()
        except psycopg2.Error as error:
            from nlp_assets.resources.warehouse import redact_url

            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            reason = redact_url(first, keep_user=True)
            raise WarehouseUnavailable(f"warehouse query failed: {reason}") from None
        return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)

    @property
    def warehouse(self) -> bool:
        return bool(self.config.database_url)

    # one document --------------------------------------------------------------------------
    def recent_days(self) -> list[str]:
        today = datetime.now(UTC).date()
        return [(today - timedelta(days=i)).isoformat() for i in range(self.config.lookup_days)]

    def prediction(self, doc_id: str, days: list[str] | None = None) -> dict[str, Any] | None:
        """The newest prediction row of a document: the warehouse, else the lake's `days` (the
        day the accepted index names; None: the last N days), newest day first, each one
        filtered scan of the predictions table (`Lake.find`)."""
        if self.warehouse:
            from psycopg2 import sql

            frame = self._query(
                sql.SQL(
                    "SELECT * FROM {} WHERE doc_id = %s ORDER BY ingest_date DESC, loaded_at DESC "
                    "LIMIT 1"
                ).format(sql.Identifier(self.config.warehouse_schema, "v_predictions")),
                [doc_id],
            )
            if frame.height:
                return _json_row(frame.row(0, named=True))
        for day in self.recent_days() if days is None else days:
            frame = self.lake.find(PREDICTIONS, [day], "doc_id", doc_id)
            if frame.height:
                return _json_row(frame.row(0, named=True))
        return None

    def trace(self, doc_id: str, day: str | None) -> dict[str, Any]:
        """The document's `trace_id` (from its raw row's trace context) and the Dagster runs
        whose commits wrote its day and part, oldest first (`Lake.document_runs`)."""
        if not day:
            return {"trace_id": None, "runs": []}
        path = self.lake.document_runs(doc_id, str(day), RAW_ASSET)
        return {
            "trace_id": tracing.trace_id_of(path["traceparent"]),
            "runs": list(dict.fromkeys(c["run_id"] for c in path["runs"] if c["run_id"])),
        }

    def quarantined(self, doc_id: str, days: list[str] | None = None) -> dict[str, Any] | None:
        """A quarantine row naming the document (any stage, `days` or the last N days),
        without raw bytes."""
        folder = self.lake.root / QUARANTINE
        stages = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        for day in self.recent_days() if days is None else days:
            for stage in stages:
                hit = self.lake.find(f"{QUARANTINE}/{stage}", [day], "doc_id", doc_id)
                if hit.height:
                    row = hit.row(0, named=True)
                    return {
                        "stage": row.get("stage") or stage,
                        "day": str(row.get("ingest_date") or day),
                        "reason": row.get("reason"),
                    }
        return None

    # a day ---------------------------------------------------------------------------------
    def predictions(
        self,
        day: str,
        *,
        source: str | None = None,
        language: str | None = None,
        label: str | None = None,
    ) -> pl.DataFrame:
        if self.warehouse:
            from psycopg2 import sql

            where, params = [sql.SQL("ingest_date = %s")], [day]
            for column, value in (("source", source), ("lang", language)):
                if value is not None:
                    where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                    params.append(value)
            if label is not None:
                where.append(sql.SQL("sentiment_label = %s"))
                params.append(label)
            frame = self._query(
                sql.SQL("SELECT * FROM {} WHERE {} ORDER BY doc_id, part").format(
                    sql.Identifier(self.config.warehouse_schema, "v_predictions"),
                    sql.SQL(" AND ").join(where),
                ),
                params,
            )
            if frame.height:
                return frame
        frame = _read().read_predictions(day, lake=self.lake)
        for column, value in (("source", source), ("lang", language), ("sentiment_label", label)):
            if value is not None:
                frame = frame.filter(pl.col(column) == value)
        return frame.sort("doc_id")

    def aggregates(self, day: str) -> pl.DataFrame:
        return _read().read_aggregates(day, lake=self.lake)

    def report_path(self, day: str) -> Path | None:
        path = Path(self.config.reports_dir) / day / "report.html"
        return path if path.is_file() else None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, str) and value[:1] in "[{":  # jsonb from the warehouse
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in row.items()}


def frame_records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [_json_row(r) for r in frame.iter_rows(named=True)]


#: A cell a spreadsheet would run as a formula starts with one of these (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def frame_csv(frame: pl.DataFrame) -> bytes:
    """CSV with nested columns (entities, top n-grams) as JSON text. Every text cell that a
    spreadsheet would take for a formula gets a leading `'` (sources, labels and entity text
    come from callers); numbers are left as they are."""
    nested = [c for c, t in frame.schema.items() if isinstance(t, pl.List | pl.Struct | pl.Object)]
    flat = frame.with_columns(
        pl.Series(c, [json.dumps(_plain(v)) for v in frame[c].to_list()], dtype=pl.String)
        for c in nested
    )
    text = [c for c, t in flat.schema.items() if t == pl.String]
    flat = flat.with_columns(
        pl.when(pl.any_horizontal(pl.col(c).str.starts_with(s) for s in FORMULA_STARTS))
        .then(pl.lit("'") + pl.col(c))
        .otherwise(pl.col(c))
        .alias(c)
        for c in text
    )
    return flat.write_csv().encode("utf-8")


def frame_parquet(frame: pl.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    return buffer.getvalue()
