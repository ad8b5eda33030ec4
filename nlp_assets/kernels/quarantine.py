"""The one shape every stage uses for rows it refuses: kept with a reason, never dropped."""

from __future__ import annotations

from datetime import date

import polars as pl

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "stage": pl.String(),
    "ingest_date": pl.Date(),
    "doc_id": pl.String(),
    "file": pl.String(),
    "location": pl.String(),
    "reason": pl.String(),
    "payload": pl.String(),
}

#: Payloads are kept for inspection, cut to this many characters.
PAYLOAD_PREVIEW_CHARS = 2_000


def quarantine_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """Rows of `QUARANTINE_SCHEMA` (missing keys become null)."""
    return pl.DataFrame(
        [{key: row.get(key) for key in QUARANTINE_SCHEMA} for row in rows],
        schema=QUARANTINE_SCHEMA,
        orient="row",
    ).with_columns(pl.col("payload").str.slice(0, PAYLOAD_PREVIEW_CHARS))


def quarantine_docs(
    docs: pl.DataFrame, *, stage: str, day: date, reason: pl.Expr | str
) -> pl.DataFrame:
    """Quarantine rows of a document frame (with `doc_id` and `text`) under one reason."""
    reason_expr = pl.lit(reason) if isinstance(reason, str) else reason
    return docs.select(
        pl.lit(stage).alias("stage"),
        pl.lit(day).alias("ingest_date"),
        pl.col("doc_id"),
        (pl.col("file") if "file" in docs.columns else pl.lit(None, pl.String)).alias("file"),
        pl.lit(None, pl.String).alias("location"),
        reason_expr.alias("reason"),
        pl.col("text").str.slice(0, PAYLOAD_PREVIEW_CHARS).alias("payload"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
