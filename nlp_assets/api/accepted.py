"""Which documents the API accepted, where they went and when: the `accepted` status of
`GET /v1/documents/{doc_id}` until the pipeline has processed (or quarantined) them.

With DATABASE_URL, a table `<keys schema>.accepted` (doc_id, destination, accepted_at), one
row per doc_id, updated when a document is sent again. Without it, and with the landing folder
as the sink, the API's own landing parts (`<landing>/<day>/api/*.jsonl`, the last N days) are
the record: their lines are the documents, and the doc_id is recomputed from each line exactly
as at submission. With Kafka and no database there is no record (the status stays 404 until a
prediction or quarantine row exists).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from nlp_assets.api.config import ApiSettings
from nlp_assets.kernels.ingest import doc_id_for, normalise_record


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


class LandingAccepted:
    """The API's landing parts of the last `days` days, newest first."""

    def __init__(self, landing_dir: str, sub_dir: str, default_source: str, days: int):
        self.root, self.sub_dir = Path(landing_dir), sub_dir
        self.default_source, self.days = default_source, days

    def record(self, ids: list[str], destination: str) -> None:
        return None  # the part the sink wrote is the record

    def lookup(self, doc_id: str) -> dict[str, Any] | None:
        today = datetime.now(UTC).date()
        for back in range(self.days):
            day = (today - timedelta(days=back)).isoformat()
            folder = self.root / day / self.sub_dir
            parts = sorted(folder.glob("[!.]*.jsonl"), reverse=True) if folder.is_dir() else []
            for part in parts:
                if doc_id in self._ids(part):
                    stamp = datetime.fromtimestamp(part.stat().st_mtime, UTC)
                    return {
                        "destination": f"landing:{day}/{self.sub_dir}/{part.name}",
                        "accepted_at": stamp.isoformat(timespec="seconds"),
                    }
        return None

    def _ids(self, part: Path) -> set[str]:
        ids = set()
        with part.open("rb") as handle:
            for line in handle:
                try:
                    row = normalise_record(json.loads(line), default_source=self.default_source)
                except Exception:  # the API writes only valid lines; anything else is not ours
                    continue
                ids.add(doc_id_for(row["source"], row["source_id"], row["text"]))
        return ids


def accepted_log(config: ApiSettings, landing_sub_dir: str) -> AcceptedLog:
    if config.database_url:
        return PostgresAccepted(config.database_url, config.keys_schema)
    if not config.kafka_bootstrap:
        return LandingAccepted(
            config.landing_dir, landing_sub_dir, config.default_source, config.lookup_days
        )
    return NoRecord()
