"""Configured passwords never reach what Dagster records: event log, tags, run config,
snapshots, the instance's tables or DAGSTER_HOME (real Postgres and Redis)."""

from __future__ import annotations

import json
import secrets
import shutil
import zlib
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import redis
from dagster._serdes import serialize_value
from psycopg2 import sql

from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.lake import Lake
from nlp_assets.resources.models import ModelResource
from nlp_assets.resources.warehouse import WarehouseResource, redact_url
from nlp_assets_tests.postgres_db import temp_database, url_for
from nlp_assets_tests.test_instance_postgres import _landing

REPO = Path(__file__).parents[1]
DAY = "2026-11-18"
#: The stages that need neither the sentiment head nor a trained model, and one warehouse table.
SELECTION = ["raw_text", "cleaned_text", "tokens", "features", "warehouse_documents"]


def _docs_embedded(root: Path) -> set[str]:
    """Distinct texts the features stage embedded (the cache key is the text's hash)."""
    return set(Lake(root / "lake").read_day("cleaned_text", DAY)["text"])


def _instance_tables_text(conn) -> str:
    """Every row of every table of the Dagster instance as text; compressed snapshot bodies
    are decompressed."""
    chunks = []
    with conn.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in cursor.fetchall():
            cursor.execute(sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table)))
            chunks.extend(row[0] for row in cursor.fetchall())
        cursor.execute("SELECT snapshot_body FROM snapshots")
        chunks.extend(zlib.decompress(bytes(row[0])).decode() for row in cursor.fetchall())
    return "\n".join(chunks)


def _records_text(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    parts = [serialize_value(entry) for entry in instance.all_logs(run_id)]
    parts += [json.dumps(run.tags), json.dumps(run.run_config, default=str)]
    parts.append(serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
    parts.append(
        serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))
    )
    return "\n".join(parts)


@pytest.mark.postgres
@pytest.mark.redis
def test_passwords_never_appear_in_what_dagster_records(
    tmp_path: Path, models: ModelResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg_password = f"pg-{secrets.token_hex(12)}"
    warehouse_password = f"wh-{secrets.token_hex(12)}"
    redis_password = f"rd-{secrets.token_hex(12)}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    namespace = f"nlp-sec-{secrets.token_hex(4)}"
    cache = redis.Redis(host="127.0.0.1", port=6379, db=15)
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    _landing(tmp_path / "landing")

    with temp_database("nlp_dagster_sec") as instance_db, temp_database("nlp_wh_sec") as wh_db:
        monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
        monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
        monkeypatch.setenv("DAGSTER_PG_DB", instance_db)
        monkeypatch.setenv("DAGSTER_PG_USERNAME", "postgres")
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", pg_password)  # trust auth: accepted, unused
        monkeypatch.setenv("DATABASE_URL", url_for(wh_db, password=warehouse_password))
        # The test Redis has no password and redis-py then accepts any: the cache is used
        # with a password-bearing URL. Own namespace, removed afterwards.
        monkeypatch.setenv("REDIS_URL", f"redis://:{redis_password}@127.0.0.1:6379/15")
        monkeypatch.setenv("NLP_CACHE_NAMESPACE", namespace)
        resources = {
            **build_resources(
                lake_dir=str(tmp_path / "lake"),
                landing_dir=str(tmp_path / "landing"),
                reports_dir=str(tmp_path / "reports"),
            ),
            "models": models,
            "warehouse": WarehouseResource(database_url=dg.EnvVar("DATABASE_URL")),
        }
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            ok = dg.materialize(
                all_assets,
                selection=SELECTION,
                partition_key=DAY,
                instance=instance,
                resources=resources,
                tags={"team": "nlp"},
            )
            # The warehouse unreachable (a closed port): the failure must not echo the URL.
            monkeypatch.setenv(
                "DATABASE_URL",
                url_for(wh_db, password=warehouse_password).replace(":5432/", ":1/"),
            )
            failed = dg.materialize(
                all_assets,
                selection=["warehouse_documents"],
                partition_key=DAY,
                instance=instance,
                resources={
                    **resources,
                    "warehouse": WarehouseResource(database_url=dg.EnvVar("DATABASE_URL")),
                },
                raise_on_error=False,
            )
            recorded = _records_text(instance, ok.run_id) + _records_text(instance, failed.run_id)
        finally:
            instance.dispose()
        conn = psycopg2.connect(url_for(instance_db))
        try:
            tables = _instance_tables_text(conn)
        finally:
            conn.close()
    cached = cache.keys(f"{namespace}:*")
    if cached:
        cache.delete(*cached)

    assert ok.success, "the pipeline must succeed with Redis refusing the password"
    assert not failed.success
    assert [e.step_key for e in failed.get_step_failure_events()] == ["warehouse_documents"]
    assert "cannot connect to the warehouse database" in recorded  # with the libpq reason
    assert ok.run_id in tables and "warehouse_documents" in recorded  # we looked in the right place
    assert len(cached) == len(_docs_embedded(tmp_path))  # Redis cached every embedding
    home_files = "\n".join(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file())
    for secret in (pg_password, warehouse_password, redis_password):
        assert secret not in recorded
        assert secret not in tables
        assert secret not in home_files


def test_redact_url_hides_passwords_in_any_text() -> None:
    text = "failed: postgresql://app:s3cr%40t@db:5432/nlp and rediss://:pw@cache:6380/0"
    redacted = redact_url(text, keep_user=True)
    assert "s3cr" not in redacted and ":pw@" not in redacted
    assert "postgresql://app:***@db:5432/nlp" in redacted
    assert "rediss://:***@cache:6380/0" in redacted
