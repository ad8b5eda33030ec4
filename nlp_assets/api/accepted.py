"""Which documents the API accepted, where they went and when: the `accepted` status of
`GET /v1/documents/{doc_id}` until the pipeline has processed (or quarantined) them.

With DATABASE_URL, a table `<keys schema>.accepted` (doc_id, destination, accepted_at), one
row per doc_id, updated when a document is sent again. Without it, and with the landing folder
as the sink, an SQLite index of the same shape beside the environment's key file. With Kafka
and no database there is no record (the status stays 404 until a prediction or quarantine row
exists). Either way a lookup is an index probe, never a scan of what was submitted.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from nlp_assets.api.config import ApiSettings


class AcceptedLog(Protocol):
    def record(self, ids: list[str], destination: str) -> None: ...
    def lookup(self, doc_id: str) -> dict[str, Any] | None: ...


class NoRecord:
    """Kafka without a database: nothing to look up (see the module docstring)."""

    def record(self, ids: list[str], destination: str) -> None:
        return None

    def lookup(self, doc_id: str) -> dict[str, Any] | None:
        return None


class PostgresAccepted:
    def __init__(self, database_url: str, schema: str):
        self.database_url, self.schema = database_url, schema
        self._ready = False

    def _connect(self):
        import psycopg2

        return psycopg2.connect(self.database_url, connect_timeout=5, application_name="nlp_api")

    def _table(self):
        from psycopg2 import sql

        return sql.Identifier(self.schema, "accepted")

    def _ensure(self, cursor) -> None:
        if self._ready:
            return
        from psycopg2 import sql

        cursor.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
        )
        cursor.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (doc_id text PRIMARY KEY, destination text NOT "
                "NULL, accepted_at timestamptz NOT NULL DEFAULT now())"
            ).format(self._table())
        )
        self._ready = True

    def record(self, ids: list[str], destination: str) -> None:
        from psycopg2 import sql
        from psycopg2.extras import execute_values

        conn = self._connect()
        try:
            with conn, conn.cursor() as cursor:
                self._ensure(cursor)
                execute_values(
                    cursor,
                    sql.SQL(
                        "INSERT INTO {} (doc_id, destination) VALUES %s ON CONFLICT (doc_id) DO "
                        "UPDATE SET destination = EXCLUDED.destination, accepted_at = now()"
                    )
                    .format(self._table())
                    .as_string(cursor),
                    [(doc_id, destination) for doc_id in ids],
                )
        finally:
            conn.close()

    def lookup(self, doc_id: str) -> dict[str, Any] | None:
        from psycopg2 import sql

        conn = self._connect()
        try:
            with conn, conn.cursor() as cursor:
                self._ensure(cursor)
                cursor.execute(
                    sql.SQL("SELECT destination, accepted_at FROM {} WHERE doc_id = %s").format(
                        self._table()
                    ),
                    [doc_id],
                )
                row = cursor.fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        return {"destination": row[0], "accepted_at": row[1].astimezone(UTC).isoformat()}


class IndexedAccepted:
    """Without a database: an SQLite index (doc_id primary key) beside the environment's key
    file, written when the sink has taken the documents. A lookup is one index probe, whatever
    was submitted (re-reading a week of landing parts cost 0.15-0.25 s of CPU per lookup after
    20,000 submissions). Rows older than `days` are dropped at most once an hour."""

    def __init__(self, path: Path, days: int):
        self.path, self.days = Path(path), days
        self._pruned = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS accepted (doc_id TEXT PRIMARY KEY, "
                "destination TEXT NOT NULL, accepted_at TEXT NOT NULL) WITHOUT ROWID"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS accepted_at ON accepted (accepted_at)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return contextlib.closing(conn)  # type: ignore[return-value]

    def record(self, ids: list[str], destination: str) -> None:
        now = datetime.now(UTC)
        stamp = now.isoformat(timespec="seconds")
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO accepted (doc_id, destination, accepted_at) VALUES (?, ?, ?) "
                "ON CONFLICT (doc_id) DO UPDATE SET destination = excluded.destination, "
                "accepted_at = excluded.accepted_at",
                [(doc_id, destination, stamp) for doc_id in ids],
            )
            if time.monotonic() - self._pruned > 3600:
                cutoff = (now - timedelta(days=self.days)).isoformat(timespec="seconds")
                conn.execute("DELETE FROM accepted WHERE accepted_at < ?", [cutoff])
                self._pruned = time.monotonic()
            conn.execute("COMMIT")

    def lookup(self, doc_id: str) -> dict[str, Any] | None:
        cutoff = (datetime.now(UTC) - timedelta(days=self.days)).isoformat(timespec="seconds")
        with self._connect() as conn:
            row = conn.execute(
                "SELECT destination, accepted_at FROM accepted WHERE doc_id = ? "
                "AND accepted_at >= ?",
                [doc_id, cutoff],
            ).fetchone()
        return None if row is None else {"destination": row[0], "accepted_at": row[1]}


def accepted_log(config: ApiSettings, landing_sub_dir: str) -> AcceptedLog:
    if config.database_url:
        return PostgresAccepted(config.database_url, config.keys_schema)
    if not config.kafka_bootstrap:
        return IndexedAccepted(config.accepted_index, config.lookup_days)
    return NoRecord()
