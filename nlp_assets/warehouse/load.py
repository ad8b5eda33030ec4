"""Bulk-load a stage's frame into its warehouse table: one transaction per (day, part).

`replace_part` deletes the rows a part wrote before and COPYs the new ones in the same
transaction: a re-run replaces exactly what it wrote, a failed COPY rolls back to the rows that
were there. `replace_day` does the same for a whole day: every row of the day goes, the lake's
parts of that day come in (each row keeps its part, as in the lake). An advisory lock per table
and day serialises two loads of the same day.

SQL is composed only from validated identifiers (`psycopg2.sql.Identifier`); values travel as
query parameters or in the COPY stream, never in the SQL text.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from opentelemetry.trace import SpanKind
from psycopg2 import sql

from nlp_assets import tracing
from nlp_assets.kernels.predict import PREDICTED_COLUMNS
from nlp_assets.lake import DAY_PART

SCHEMA_SQL = Path(__file__).with_name("schema.sql")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PART = re.compile(r"^[A-Za-z0-9._=-]+$")  # as the lake names parts
#: Postgres text cannot hold NUL; such a character becomes U+FFFD in the warehouse only.
_NUL, _REPLACEMENT = "\x00", "\ufffd"


@dataclass(frozen=True)
class TableSpec:
    """A warehouse table: the stage it mirrors and the columns COPY fills (in this order)."""

    name: str
    asset: str
    columns: tuple[str, ...]
    json_columns: tuple[str, ...] = ()
    #: The stage always stores whole days (aggregates): loaded per day, never per part.
    whole_day: bool = False

    @property
    def copy_columns(self) -> tuple[str, ...]:
        return (*self.columns, "part", "run_id")


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "documents",
            "cleaned_text",
            (
                "ingest_date",
                "doc_id",
                "source",
                "text",
                "n_chars",
                "content_hash",
                "is_duplicate",
                "duplicate_of",
                "lang",
                "lang_score",
            ),
        ),
        TableSpec(
            "predictions",
            "predictions",
            ("ingest_date", "doc_id", "source", "lang", "is_duplicate", *PREDICTED_COLUMNS),
            json_columns=("entities",),
        ),
        TableSpec(
            "aggregates",
            "aggregates",
            (
                "ingest_date",
                "lang",
                "sentiment_label",
                "n_docs",
                "n_duplicates",
                "mean_sentiment_score",
                "top_entities",
                "top_ngrams",
            ),
            json_columns=("top_entities", "top_ngrams"),
            whole_day=True,
        ),
    )
}


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(
            f"invalid Postgres identifier {name!r}: use lower-case letters, digits and _ "
            "(at most 63, not starting with a digit)"
        )
    return name


def ensure_schema(conn, schema: str = "nlp") -> None:
    """Create the schema, tables, indexes and views if missing (one transaction)."""
    check_identifier(schema)
    with conn, conn.cursor() as cursor:
        quoted = sql.Identifier(schema).as_string(conn)
        # Concurrent first loads would race on CREATE ... IF NOT EXISTS; serialise them.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{schema}:ddl"])
        cursor.execute(SCHEMA_SQL.read_text(encoding="utf-8").replace("{schema}", quoted))


def copy_frame(frame: pl.DataFrame, spec: TableSpec, *, part: str, run_id: str) -> pl.DataFrame:
    """The frame as COPY will send it: the table's columns, nested ones as JSON text."""
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{spec.asset} frame lacks the columns {missing} of {spec.name}")
    out = frame.select(spec.columns)
    for column in spec.json_columns:
        values = [json.dumps(v, ensure_ascii=False) for v in out[column].to_list()]
        out = out.with_columns(pl.Series(column, values, dtype=pl.String))
    text_columns = [c for c, dtype in out.schema.items() if dtype == pl.String]
    out = out.with_columns(pl.col(text_columns).str.replace_all(_NUL, _REPLACEMENT, literal=True))
    return out.with_columns(part=pl.lit(part), run_id=pl.lit(run_id))


def _csv_stream(frame: pl.DataFrame) -> io.BytesIO:
    # Strings quoted, nulls unquoted and empty: Postgres CSV reads "" as '' and nothing as NULL.
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, quote_style="non_numeric")
    buffer.seek(0)
    return buffer


def replace_part(
    conn,
    spec: TableSpec,
    frame: pl.DataFrame,
    *,
    day: str | date,
    part: str = DAY_PART,
    run_id: str,
    schema: str = "nlp",
    stream: Any = None,
) -> int:
    """Replace the rows of (`day`, `part`) in `spec`'s table by `frame`; returns rows loaded.

    `part="day"` replaces the whole day (its other parts too, as the lake's day part does).
    `stream` overrides the COPY input (tests use it to break a load midway).
    """
    return _replace(
        conn, spec, {part: frame}, day=day, whole_day=part == DAY_PART, run_id=run_id,
        schema=schema, stream=stream,
    )  # fmt: skip


def replace_day(
    conn,
    spec: TableSpec,
    parts: dict[str, pl.DataFrame],
    *,
    day: str | date,
    run_id: str,
    schema: str = "nlp",
) -> int:
    """Replace all of `day`'s rows by the lake's parts of that day (each row keeps its part),
    in one transaction; returns rows loaded."""
    return _replace(conn, spec, parts, day=day, whole_day=True, run_id=run_id, schema=schema)


def _replace(
    conn,
    spec: TableSpec,
    parts: dict[str, pl.DataFrame],
    *,
    day: str | date,
    whole_day: bool,
    run_id: str,
    schema: str,
    stream: Any = None,
) -> int:
    check_identifier(schema)
    day = date.fromisoformat(str(day))
    batches = []
    for part, frame in parts.items():
        if not _PART.match(part):
            raise ValueError(f"invalid part name {part!r}: use letters, digits and . _ = -")
        rows = copy_frame(frame, spec, part=part, run_id=run_id)
        if rows.height and set(rows["ingest_date"].unique().to_list()) != {day}:
            raise ValueError(f"{spec.asset} rows for {day} hold other ingest dates")
        batches.append(rows)
    table = sql.Identifier(schema, spec.name)
    delete = sql.SQL("DELETE FROM {} WHERE ingest_date = %s").format(table)
    params: list[Any] = [day]
    if not whole_day:
        (part,) = parts
        delete = sql.SQL("{} AND part = %s").format(delete)
        params.append(part)
    copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, spec.copy_columns))
    )
    with (
        tracing.span(
            "warehouse copy",
            {
                "db.system": "postgresql",
                "db.collection.name": f"{schema}.{spec.name}",
                "nlp.rows": sum(rows.height for rows in batches),
            },
            kind=SpanKind.CLIENT,
        ),
        conn,
        conn.cursor() as cursor,
    ):  # commit on success, roll back on any error
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{schema}.{spec.name}:{day}"]
        )
        cursor.execute(delete, params)
        for rows in batches:
            cursor.copy_expert(copy, stream if stream is not None else _csv_stream(rows))
    return sum(rows.height for rows in batches)


def warehouse_rows(
    conn, table: str, day: str | date, *, schema: str = "nlp", view: bool = True
) -> pl.DataFrame:
    """A day of a warehouse table (its consumer view by default) as a polars frame."""
    check_identifier(schema)
    spec = TABLES[table]
    relation = sql.Identifier(schema, f"v_{spec.name}" if view else spec.name)
    query = sql.SQL("SELECT * FROM {} WHERE ingest_date = %s").format(relation)
    with conn, conn.cursor() as cursor:
        cursor.execute(query, [date.fromisoformat(str(day))])
        names = [d.name for d in cursor.description]
        records = cursor.fetchall()
    return pl.DataFrame(records, schema=names, orient="row", infer_schema_length=None)
