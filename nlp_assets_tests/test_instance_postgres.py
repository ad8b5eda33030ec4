"""The production instance config (deploy/dagster.yaml) on the real Postgres: the whole pipeline
and the warehouse for one partition, read back through the instance and through SQL."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg2
import pytest

from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.lake import Lake
from nlp_assets.resources.models import ModelResource
from nlp_assets.resources.warehouse import WarehouseResource
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import PIPELINE
from nlp_assets.stages.sentiment_model import SentimentTrainingConfig
from nlp_assets.warehouse import warehouse_rows
from nlp_assets_tests.postgres_db import ADMIN_URL, temp_database, url_for

pytestmark = pytest.mark.postgres

REPO = Path(__file__).parents[1]
DAY = "2026-11-18"
STAGES = list(stage_names(PIPELINE))  # the pipeline's stages, in order
WAREHOUSE = ["warehouse_documents", "warehouse_predictions", "warehouse_aggregates"]
#: Per (domain, label) of the labelled set: enough for the head to pass its accuracy check.
TRAINING_ROWS_PER_CLASS = 250  # held-out accuracy 0.743 (floor 0.70), measured

DOCS = [
    "The film was a delight from start to finish, with a warm and funny script.",
    "A tedious, badly acted mess. I walked out after an hour.",
    "Great acting and a beautiful score; the best movie I have seen this year.",
    "The plot made no sense and the dialogue was painfully dull.",
    "This medicine worked wonders for my migraines, no side effects at all.",
    "Terrible side effects, I felt sick for a week and it did not help.",
    "Barclays reported higher profits in London on Tuesday.",
    "The new phone from Apple has an excellent battery and a bright screen.",
    "Customer service never answered my emails. Very disappointing.",
    "Lovely hotel near the beach, friendly staff and a great breakfast.",
    "The update broke the app; it crashes every time I open it.",
    "An inspiring documentary about Marie Curie and her work in Paris.",
    "I would not recommend this restaurant: cold food and rude waiters.",
    "Fast delivery and the shoes fit perfectly. Very happy!",
    "The concert in Berlin was loud, messy and far too short.",
    "Un film magnifique, plein d'émotion et très bien joué.",
    "Das Buch war langweilig und viel zu lang.",
    "A solid, enjoyable thriller with a clever twist at the end.",
    "The battery died after two days and the charger is useless.",
    "A solid, enjoyable thriller with a clever twist at the end.",  # an exact re-post
]


def _landing(root: Path) -> int:
    day_dir = root / DAY
    day_dir.mkdir(parents=True)
    lines = [
        json.dumps({"id": f"r{i}", "source": "reviews", "text": text})
        for i, text in enumerate(DOCS)
    ]
    lines.insert(7, '{"id": "broken", "text": ')  # one invalid JSON line: quarantined
    (day_dir / "reviews.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(DOCS)


def _labelled(path: Path) -> Path:
    labelled = pl.read_parquet(REPO / "data" / "labelled" / "sentiment.parquet")
    sample = labelled.filter(
        pl.int_range(pl.len()).shuffle(seed=0).over("domain", "label") < TRAINING_ROWS_PER_CLASS
    )
    sample.write_parquet(path)
    return path


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory, models: ModelResource):
    root = tmp_path_factory.mktemp("instance_postgres")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    docs = _landing(root / "landing")
    labelled = _labelled(root / "labelled.parquet")

    with (
        temp_database("nlp_dagster_test") as instance_db,
        temp_database("nlp_warehouse_test") as warehouse_db,
        pytest.MonkeyPatch.context() as env,
    ):
        admin_host = ADMIN_URL.split("@")[-1].split("/")[0]
        host, _, port = admin_host.partition(":")
        env.setenv("DAGSTER_PG_HOST", host)
        env.setenv("DAGSTER_PG_PORT", port or "5432")
        env.setenv("DAGSTER_PG_DB", instance_db)
        env.setenv("DAGSTER_PG_USERNAME", "postgres")
        env.setenv("DAGSTER_PG_PASSWORD", "not-checked-by-trust-auth")
        env.setenv("DATABASE_URL", url_for(warehouse_db))

        resources = {
            **build_resources(
                lake_dir=str(root / "lake"),
                landing_dir=str(root / "landing"),
                reports_dir=str(root / "reports"),
            ),
            "models": models,
            "warehouse": WarehouseResource(database_url=dg.EnvVar("DATABASE_URL")),
        }
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            trained = dg.materialize(
                all_assets,
                selection=["sentiment_model"],
                instance=instance,
                resources=resources,
                run_config=dg.RunConfig(
                    {"sentiment_model": SentimentTrainingConfig(labelled_path=str(labelled))}
                ),
            )
            day = dg.materialize(
                all_assets,
                selection=PIPELINE | dg.AssetSelection.groups("warehouse"),
                partition_key=DAY,
                instance=instance,
                resources=resources,
            )
            warehouse = psycopg2.connect(url_for(warehouse_db))
            instance_sql = psycopg2.connect(url_for(instance_db))
            try:
                yield {
                    "instance": instance,
                    "trained": trained,
                    "day": day,
                    "docs": docs,
                    "lake": Lake(root / "lake"),
                    "warehouse": warehouse,
                    "instance_sql": instance_sql,
                }
            finally:
                warehouse.close()
                instance_sql.close()
        finally:
            instance.dispose()


def test_the_instance_is_on_postgres_with_the_deploy_settings(production) -> None:
    instance = production["instance"]
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 12
    limits = {limit["key"]: limit["limit"] for limit in queue.tag_concurrency_limits}
    assert limits == {"dagster/partition": 1, "dagster/backfill": 8}
    assert limits["dagster/backfill"] < queue.max_concurrent_runs  # micro-batches keep slots
    # The model stages ran in pool "gpu": the instance gave it the configured default limit.
    assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1


def test_runs_are_read_back_from_postgres(production) -> None:
    instance = production["instance"]
    runs = instance.get_runs()
    assert {run.run_id for run in runs} == {production["trained"].run_id, production["day"].run_id}
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    day_run = instance.get_run_by_id(production["day"].run_id)
    assert day_run.tags["dagster/partition"] == DAY
    with production["instance_sql"].cursor() as cursor:  # really in Postgres, not a file
        cursor.execute("SELECT run_id, status FROM runs ORDER BY create_timestamp")
        assert dict(cursor.fetchall()) == {run.run_id: "SUCCESS" for run in runs}


def test_materialisations_of_every_stage_are_read_back(production) -> None:
    instance, lake = production["instance"], production["lake"]
    for stage in STAGES:
        key = dg.AssetKey(stage)
        event = instance.get_latest_materialization_event(key)
        assert event is not None and event.run_id == production["day"].run_id, stage
        materialisation = event.asset_materialization
        assert materialisation.partition == DAY
        rows = materialisation.metadata["dagster/row_count"].value
        assert rows == lake.read_day(stage, DAY).height, stage
        assert instance.get_materialized_partitions(key) == {DAY}, stage
    checks = production["day"].get_asset_check_evaluations()
    assert {c.asset_key.to_user_string() for c in checks} == set(STAGES)
    assert all(c.passed for c in checks)


def test_the_documents_add_up_and_reach_the_warehouse(production) -> None:
    lake, warehouse = production["lake"], production["warehouse"]
    raw = lake.read_day("raw_text", DAY)
    assert raw.height == production["docs"]
    assert lake.read_quarantine("raw_text", DAY)["reason"].str.starts_with("invalid JSON").all()
    predictions = lake.read_day("predictions", DAY)
    assert predictions.height == raw.height

    sql_predictions = warehouse_rows(warehouse, "predictions", DAY)
    assert sorted(sql_predictions["doc_id"]) == sorted(predictions["doc_id"])
    assert sorted(warehouse_rows(warehouse, "documents", DAY)["doc_id"]) == sorted(raw["doc_id"])
    english = sql_predictions.filter(pl.col("lang") == "en")
    assert english["sentiment_label"].null_count() == 0
    assert set(sql_predictions.filter(pl.col("lang") != "en")["skipped_reason"]) != {None}
    aggregates = warehouse_rows(warehouse, "aggregates", DAY)
    assert aggregates["n_docs"].sum() == raw.height
    assert aggregates.height == lake.read_day("aggregates", DAY).height

    instance = production["instance"]
    for name in WAREHOUSE:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert event is not None and event.asset_materialization.partition == DAY, name
    assert date.fromisoformat(DAY) in set(sql_predictions["ingest_date"])
