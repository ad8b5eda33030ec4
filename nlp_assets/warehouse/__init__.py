"""Postgres warehouse tables for readers of SQL: documents, predictions, aggregates.

Plain functions over a DB-API connection (psycopg2) and polars frames; no Dagster here. The
tables, indexes and consumer views are in `schema.sql`.
"""

from nlp_assets.warehouse.load import (
    TABLES,
    TableSpec,
    copy_frame,
    ensure_schema,
    replace_day,
    replace_part,
    warehouse_rows,
)

__all__ = [
    "TABLES",
    "TableSpec",
    "copy_frame",
    "ensure_schema",
    "replace_day",
    "replace_part",
    "warehouse_rows",
]
