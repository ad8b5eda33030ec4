"""The one shape every stage uses for rows it refuses: kept with a reason, never dropped.

A quarantine row keeps what arrived: `payload` is a readable text preview (the first
`PAYLOAD_PREVIEW_CHARS` characters, invalid UTF-8 replaced) and `raw` the bytes as they came,
cut to `RAW_MAX_BYTES`; `raw_size` is the size before the cut, so a reader knows whether `raw`
is whole (`raw_size == len(raw)`).
"""

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
    "raw": pl.Binary(),
    "raw_size": pl.Int64(),
}

#: Payloads are kept for inspection, cut to this many characters.
PAYLOAD_PREVIEW_CHARS = 2_000
#: Raw bytes of a refused record are kept up to this size (4 MiB): a 2 MB Kafka message or an
#: over-long line is kept whole, a 1 GB file is not.
RAW_MAX_BYTES = 4 * 1024 * 1024


def quarantine_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """Rows of `QUARANTINE_SCHEMA` (missing keys become null).

    A row may give `raw` (bytes, or text kept as its UTF-8 bytes): it is cut to `RAW_MAX_BYTES`
    and `raw_size` records its full size; a row without `payload` gets a text preview of `raw`.
    """
    shaped = []
    for row in rows:
        out = {key: row.get(key) for key in QUARANTINE_SCHEMA}
        raw = row.get("raw")
        if isinstance(raw, str):
            raw = raw.encode("utf-8", errors="surrogatepass")
        if isinstance(raw, bytes | bytearray | memoryview):
            raw = bytes(raw)
            out["raw_size"] = row.get("raw_size", len(raw))
            out["raw"] = raw[:RAW_MAX_BYTES]
            if out["payload"] is None:
                out["payload"] = raw[: PAYLOAD_PREVIEW_CHARS * 4].decode("utf-8", "replace")
        if isinstance(out["payload"], str):
            out["payload"] = _printable(out["payload"][:PAYLOAD_PREVIEW_CHARS])
        shaped.append(out)
    return pl.DataFrame(shaped, schema=QUARANTINE_SCHEMA, orient="row")


def _printable(text: str) -> str:
    """Lone surrogates cannot be stored as UTF-8: shown as U+FFFD in the preview (raw keeps
    the bytes)."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


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
        pl.lit(None, pl.Binary).alias("raw"),
        pl.lit(None, pl.Int64).alias("raw_size"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
