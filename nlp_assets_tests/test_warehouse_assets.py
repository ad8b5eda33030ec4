"""The warehouse assets in Dagster: a day (or a micro-batch's part) from the lake to Postgres,
and a clear skip when no database is configured."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg2
import pytest

from nlp_assets.definitions import defs
from nlp_assets.kernels.aggregate import AGGREGATES_SCHEMA
from nlp_assets.kernels.clean import CLEANED_SCHEMA
from nlp_assets.lake import Lake
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.lake import PART_TAG, LakeResource
from nlp_assets.resources.warehouse import NOT_CONFIGURED, WarehouseResource, warehouse_from_env
from nlp_assets.warehouse import warehouse_rows
from nlp_assets.warehouse.assets import warehouse_assets
from nlp_assets_tests.postgres_db import temp_database, url_for
from nlp_assets_tests.test_warehouse_postgres import predictions_frame

DAY = "2026-11-18"
WAREHOUSE = ["warehouse_documents", "warehouse_predictions", "warehouse_aggregates"]
#: The stages the warehouse reads (from the lake), as source assets: no models needed here.
UPSTREAM = [
    dg.SourceAsset(name, partitions_def=daily_partitions)
    for name in ("cleaned_text", "predictions", "aggregates")
]


def cleaned_frame(doc_ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": doc_ids,
            "source": ["bbc_news"] * len(doc_ids),
            "ingest_date": [date.fromisoformat(DAY)] * len(doc_ids),
            "text": [f"Text of {d} with a tab\tand a NUL\x00 byte" for d in doc_ids],
            "n_chars": [30] * len(doc_ids),
            "content_hash": ["0" * 64] * len(doc_ids),
            "is_duplicate": [False] * len(doc_ids),
            "duplicate_of": [None] * len(doc_ids),
            "lang": ["en"] * len(doc_ids),
            "lang_score": [0.99] * len(doc_ids),
            "traceparent": [None] * len(doc_ids),
        },
        schema=CLEANED_SCHEMA,
    )


def aggregates_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ingest_date": [date.fromisoformat(DAY)] * 2,
            "lang": ["en", "fr"],
            "sentiment_label": ["positive", None],
            "n_docs": [3, 1],
            "n_duplicates": [0, 0],
            "mean_sentiment_score": [0.9, None],
            "top_entities": [[], []],
            "top_ngrams": [[{"ngram": "great", "count": 2}], []],
        },
        schema=AGGREGATES_SCHEMA,
    )


def fill_lake(root: Path) -> Lake:
    lake = Lake(root)
    predictions = predictions_frame(8)
    lake.write("predictions", DAY, predictions)
    lake.write("cleaned_text", DAY, cleaned_frame(predictions["doc_id"].to_list()))
    lake.write("aggregates", DAY, aggregates_frame())
    return lake


def resources(root: Path, warehouse: WarehouseResource) -> dict[str, object]:
    return {"lake": LakeResource(root=str(root)), "warehouse": warehouse}


def materialise(root: Path, warehouse: WarehouseResource, **kwargs) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [*warehouse_assets, *UPSTREAM],
            partition_key=DAY,
            instance=instance,
            resources=resources(root, warehouse),
            **kwargs,
        )


def test_the_warehouse_group_is_its_own_job_outside_the_daily_pipeline() -> None:
    graph = defs.resolve_asset_graph()
    for name, parent in zip(WAREHOUSE, ["cleaned_text", "predictions", "aggregates"], strict=True):
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "warehouse"
        assert node.parent_keys == {dg.AssetKey(parent)}
        assert node.partitions_def == graph.get(dg.AssetKey(parent)).partitions_def
    job = defs.resolve_job_def("warehouse_load")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == set(WAREHOUSE)
    daily = defs.resolve_job_def("daily_pipeline")
    assert not {k.to_user_string() for k in daily.asset_layer.executable_asset_keys} & set(
        WAREHOUSE
    )


def test_without_database_url_the_assets_skip_and_say_why(tmp_path: Path) -> None:
    fill_lake(tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*warehouse_assets, *UPSTREAM],
            partition_key=DAY,
            instance=instance,
            resources=resources(tmp_path, WarehouseResource()),
        )
        assert result.success
        assert result.get_asset_materialization_events() == []
        warnings = [
            record.step_key
            for record in instance.all_logs(result.run_id)
            if NOT_CONFIGURED in record.user_message
        ]
    assert sorted(warnings) == sorted(WAREHOUSE)


@pytest.mark.postgres
def test_a_day_lands_in_the_warehouse_and_a_micro_batch_replaces_only_its_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = fill_lake(tmp_path)
    with temp_database("nlp_wh_assets") as database:
        monkeypatch.setenv("DATABASE_URL", url_for(database))
        warehouse = WarehouseResource(database_url=dg.EnvVar("DATABASE_URL"))

        result = materialise(tmp_path, warehouse)
        assert result.success
        rows = {
            e.asset_key.to_user_string(): e.materialization.metadata["dagster/row_count"].value
            for e in result.get_asset_materialization_events()
        }
        assert rows == {
            "warehouse_documents": 8,
            "warehouse_predictions": 8,
            "warehouse_aggregates": 2,
        }

        # A micro-batch of 3 new documents: its part is added, the day's rows stay.
        batch = predictions_frame(3, prefix="k")
        lake.write("predictions", DAY, batch, part="topic-0-100-102")
        lake.write("cleaned_text", DAY, cleaned_frame(batch["doc_id"].to_list()), "topic-0-100-102")
        again = materialise(tmp_path, warehouse, tags={PART_TAG: "topic-0-100-102"})
        assert again.success

        conn = psycopg2.connect(url_for(database))
        try:
            predictions = warehouse_rows(conn, "predictions", DAY)
            documents = warehouse_rows(conn, "documents", DAY)
            aggregates = warehouse_rows(conn, "aggregates", DAY)

            # A message re-delivered in a later micro-batch (same doc_id, another part), then
            # a whole-day run: the day is replaced by the lake's parts, each row keeping its
            # part, as the lake holds them.
            again = predictions_frame(1, prefix="k")
            lake.write("predictions", DAY, again, part="topic-0-103-103")
            assert materialise(tmp_path, warehouse).success
            whole_day = warehouse_rows(conn, "predictions", DAY)
        finally:
            conn.close()
    assert predictions.height == 11 and predictions["doc_id"].n_unique() == 11
    assert predictions.group_by("part").len().sort("part").rows() == [
        ("day", 8),
        ("topic-0-100-102", 3),
    ]
    assert sorted(documents["doc_id"]) == sorted(predictions["doc_id"])
    assert documents["text"][0].endswith("NUL\ufffd byte")  # Postgres text cannot hold NUL
    assert "\t" in documents["text"][0]
    assert aggregates.height == 2 and aggregates["n_docs"].sum() == 4
    assert whole_day.group_by("part").len().sort("part").rows() == [
        ("day", 8),
        ("topic-0-100-102", 3),
        ("topic-0-103-103", 1),
    ]
    assert whole_day.height == lake.read_day("predictions", DAY).height == 12


@pytest.mark.postgres
def test_a_day_missing_from_the_lake_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with temp_database("nlp_wh_missing") as database:
        monkeypatch.setenv("DATABASE_URL", url_for(database))
        warehouse = WarehouseResource(database_url=dg.EnvVar("DATABASE_URL"))
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                [warehouse_assets[1], *UPSTREAM],
                partition_key=DAY,
                instance=instance,
                resources=resources(tmp_path, warehouse),
                raise_on_error=False,
            )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.message
    assert f"predictions has no data for {DAY} in the lake: materialise it first" in message


def test_database_url_is_taken_as_an_env_var_and_its_absence_turns_the_warehouse_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert not warehouse_from_env().configured
    monkeypatch.setenv("DATABASE_URL", "postgresql://writer:pw@db:5432/nlp")
    monkeypatch.setenv("NLP_WAREHOUSE_SCHEMA", "nlp_custom")
    resource = warehouse_from_env()
    # Kept as an EnvVar (Dagster resolves it at run time and never records its value).
    assert isinstance(resource.database_url, dg.EnvVar)
    assert resource.database_url == "DATABASE_URL"  # the variable's name, not its value
    assert resource.process_config_and_initialize().database_url.endswith("@db:5432/nlp")
    assert resource.schema_name == "nlp_custom"
