"""The code location loads, and its asset graph is the one the pipeline is designed as.

Nothing here depends on where data lives: importing the definitions reads paths from the
environment but touches no file, and the one test about paths builds the resources afresh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets import settings
from nlp_assets.definitions import build_resources, defs
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.folders import DayFolder
from nlp_assets.resources.lake import LakeIOManager, LakeResource

STAGES = ["raw_text", "cleaned_text", "tokens", "features", "predictions", "aggregates", "reports"]
#: quality sits beside the chain: predictions and features -> quality -> reports
ASSETS = [
    *STAGES,
    "quality",
    "sentiment_model",
    "sentiment_finetuned",
    "sentiment_languages",
    "ner_evaluation",
]
#: Assets beside the pipeline, tested in their own files (test_warehouse_assets.py,
#: test_read_api.py): the warehouse tables and the example downstream asset.
ASSETS_TESTED_ELSEWHERE = [
    "warehouse_documents",
    "warehouse_predictions",
    "warehouse_aggregates",
    "sentiment_by_source",
    # the Kafka topics (external, upstream of raw_text; test_kafka_messages.py)
    *(f"kafka/{name}" for name, _priority in settings.kafka_topics()),
]

UPSTREAM = {
    "raw_text": {f"kafka/{name}" for name, _priority in settings.kafka_topics()},
    "cleaned_text": {"raw_text"},
    "tokens": {"cleaned_text"},
    "features": {"cleaned_text", "tokens"},
    "predictions": {"cleaned_text", "features", "sentiment_model", "sentiment_languages"},
    "aggregates": {"predictions", "features"},
    "quality": {"predictions", "features"},
    "reports": {"aggregates", "predictions", "quality"},
    "sentiment_model": set(),
    "sentiment_finetuned": set(),
    "sentiment_languages": set(),
    "ner_evaluation": set(),
}
GROUPS = {
    "raw_text": "ingest",
    "cleaned_text": "preprocess",
    "tokens": "preprocess",
    "features": "features",
    "predictions": "inference",
    "aggregates": "analytics",
    "quality": "analytics",
    "reports": "analytics",
    "sentiment_model": "models",
    "sentiment_finetuned": "models",
    "sentiment_languages": "models",
    "ner_evaluation": "models",
}
CHECKS = {
    **{stage: "schema" for stage in [*STAGES, "quality"]},
    "sentiment_model": "held_out_accuracy",
    "sentiment_finetuned": "held_out_floor",
    "sentiment_languages": "held_out_accuracy_per_language",
    "ner_evaluation": "entity_f1",
}


@pytest.fixture(scope="module")
def graph():
    return defs.resolve_asset_graph()


def node(graph, name: str):
    return graph.get(dg.AssetKey(name))


def test_definitions_are_loadable() -> None:
    dg.Definitions.validate_loadable(defs)


def test_exactly_the_eight_assets(graph) -> None:
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == set(
        ASSETS + ASSETS_TESTED_ELSEWHERE
    )


@pytest.mark.parametrize("name", ASSETS)
def test_upstream_deps(graph, name: str) -> None:
    parents = {key.to_user_string() for key in node(graph, name).parent_keys}
    assert parents == UPSTREAM[name]


def test_lineage_runs_from_raw_text_to_reports(graph) -> None:
    for upstream, downstream in pairwise(STAGES):
        assert dg.AssetKey(upstream) in node(graph, downstream).parent_keys


@pytest.mark.parametrize("name", ASSETS)
def test_group(graph, name: str) -> None:
    assert node(graph, name).group_name == GROUPS[name]


@pytest.mark.parametrize("name", STAGES)
def test_stages_are_daily_partitioned_in_utc_with_today_open(graph, name: str) -> None:
    partitions = node(graph, name).partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions == daily_partitions
    assert partitions.timezone == "UTC"
    assert partitions.end_offset == 1
    assert partitions.start.date().isoformat() == settings.partitions_start()


def test_sentiment_model_is_unpartitioned(graph) -> None:
    assert node(graph, "sentiment_model").partitions_def is None


@pytest.mark.parametrize("name", ASSETS)
def test_one_blocking_check(graph, name: str) -> None:
    check_key = dg.AssetCheckKey(dg.AssetKey(name), CHECKS[name])
    # non-blocking freshness and model-health checks sit beside it (nlp_assets/checks.py)
    keys = node(graph, name).check_keys
    assert {key for key in keys if graph.get_check_spec(key).blocking} == {check_key}


@pytest.mark.parametrize("name", ASSETS)
def test_description_kinds_and_code_reference(graph, name: str) -> None:
    asset = node(graph, name)
    assert asset.description and len(asset.description) > 20
    assert asset.kinds
    references = asset.metadata["dagster/code_references"].code_references
    assert [Path(reference.file_path).name for reference in references] == [f"{name}.py"]


def test_jobs(graph) -> None:
    jobs = {job.name: job for job in defs.jobs}
    assert set(jobs) == {
        "daily_pipeline",
        "train_sentiment_model",
        "train_finetuned_sentiment",
        "warehouse_load",
        "backfill_pipeline_spark",
    }
    daily = jobs["daily_pipeline"].selection.resolve(graph)
    assert {key.to_user_string() for key in daily} == {*STAGES, "quality"}
    train = jobs["train_sentiment_model"].selection.resolve(graph)
    assert train == {dg.AssetKey("sentiment_model"), dg.AssetKey("sentiment_languages")}
    finetune = jobs["train_finetuned_sentiment"].selection.resolve(graph)
    assert finetune == {dg.AssetKey("sentiment_finetuned")}
    assert defs.resolve_job_def("daily_pipeline").partitions_def == daily_partitions
    assert defs.resolve_job_def("train_sentiment_model").partitions_def is None
    # daily runs stay one per day; the Spark preset backfills a range in one run
    assert defs.resolve_job_def("daily_pipeline").backfill_policy.max_partitions_per_run == 1
    spark = defs.resolve_job_def("backfill_pipeline_spark")
    assert spark.backfill_policy == dg.BackfillPolicy.single_run()
    selected = jobs["backfill_pipeline_spark"].selection.resolve(graph)
    assert {k.to_user_string() for k in selected} == {
        "cleaned_text",
        "tokens",
        "features",
        "predictions",
    }


def test_schedule() -> None:
    schedule = defs.resolve_schedule_def("daily_pipeline_schedule")
    assert schedule.job_name == "daily_pipeline"
    assert schedule.cron_schedule == "0 1 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_sensor() -> None:
    sensor = defs.resolve_sensor_def("landing_folder_sensor")
    assert sensor.job_name == "daily_pipeline"
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.required_resource_keys == {"landing"}


def test_resources_follow_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in ("NLP_LANDING_DIR", "NLP_LAKE_DIR", "NLP_REPORTS_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NLP_DATA_DIR", str(tmp_path))

    resources = build_resources()

    lake = resources["lake"]
    assert isinstance(lake, LakeResource)
    assert lake.root == str(tmp_path / "lake")
    io_manager = resources["lake_io_manager"]
    assert isinstance(io_manager, LakeIOManager)
    assert io_manager.lake.root == str(tmp_path / "lake")
    landing, reports = resources["landing"], resources["report_folder"]
    assert isinstance(landing, DayFolder) and isinstance(reports, DayFolder)
    assert landing.root == str(tmp_path / "landing")
    assert reports.root == str(tmp_path / "reports")
    assert not any(tmp_path.iterdir())  # building resources creates nothing


@pytest.mark.parametrize("name", ASSETS)
def test_transient_failures_are_retried(name: str) -> None:
    policy = defs.resolve_assets_def(name).op.retry_policy
    assert policy is not None and policy.max_retries >= 1


@pytest.mark.parametrize("name", ["features", "predictions"])
def test_model_steps_share_the_gpu_pool(name: str) -> None:
    assert defs.resolve_assets_def(name).op.pool == "gpu"


def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    """What a user runs: `dagster definitions validate -w workspace.yaml`."""
    repo = Path(__file__).parents[1]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "NLP_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            str(repo / "workspace.yaml"),
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr
