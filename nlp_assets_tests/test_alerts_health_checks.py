"""Freshness and model-health asset checks, and the schedules that close a day."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets import checks
from nlp_assets.definitions import all_assets, build_resources, defs
from nlp_assets.schedules import (
    daily_pipeline_schedule,
    daily_reports_schedule,
    freshness_checks_schedule,
)
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import PIPELINE


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-11-26T02:59:59+00:00", "2026-11-24"),  # before today's deadline: the day before
        ("2026-11-26T03:00:00+00:00", "2026-11-25"),
        ("2026-11-26T23:59:00+00:00", "2026-11-25"),
        ("2026-11-27T01:00:00+01:00", "2026-11-25"),  # 00:00 UTC: other time zones convert
    ],
)
def test_expected_partition_is_the_day_before_the_latest_deadline(now, expected) -> None:
    assert checks.expected_partition(datetime.fromisoformat(now)) == expected


def test_model_health_judges_fallback_and_cache_error_rate() -> None:
    healthy = checks.model_health(
        {"model_fallback": 0, "cache_hits": 90, "cache_misses": 10, "cache_errors": 5}
    )
    assert healthy.passed and healthy.metadata["cache_hit_ratio"] == 0.9
    assert healthy.metadata["cache_error_rate"] == round(5 / 105, 4)  # 4.8% <= 5%

    degraded = checks.model_health(
        {"model_fallback": True, "cache_hits": 0, "cache_misses": 80, "cache_errors": 20}
    )
    assert not degraded.passed
    assert degraded.problems == [
        "a fallback model served this materialisation",
        "cache error rate 20.0% is above 5% (20 of 100 lookups)",
    ]
    silent = checks.model_health({"seconds": 3.0})
    assert silent.passed and silent.metadata["reported"] == "none of the health keys"


def _check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], object]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e
        for e in result.get_asset_check_evaluations()
    }


def test_freshness_passes_only_for_stages_that_have_the_expected_day(tmp_path: Path) -> None:
    day = checks.expected_partition(datetime.now(UTC))
    landing = tmp_path / "landing" / day
    landing.mkdir(parents=True)
    (landing / "one.jsonl").write_text(json.dumps({"id": "1", "text": "Fresh enough."}) + "\n")
    resources = build_resources(
        lake_dir=str(tmp_path / "lake"),
        landing_dir=str(tmp_path / "landing"),
        reports_dir=str(tmp_path / "reports"),
    )
    with dg.instance_for_test() as instance:
        older = (datetime.fromisoformat(day) - timedelta(days=1)).date().isoformat()
        (tmp_path / "landing" / older).mkdir()
        for partition, selection in ((day, ["raw_text"]), (older, ["raw_text", "cleaned_text"])):
            assert dg.materialize(
                all_assets,
                selection=selection,
                partition_key=partition,
                instance=instance,
                resources=resources,
            ).success
        result = dg.materialize(
            [*all_assets, checks.daily_partition_freshness],
            selection=dg.AssetSelection.checks(checks.daily_partition_freshness),
            instance=instance,
            resources=resources,
        )
    evaluations = _check_results(result)
    assert {asset for asset, _ in evaluations} == set(stage_names(PIPELINE))
    raw = evaluations[("raw_text", checks.FRESHNESS_CHECK)]
    assert raw.passed and raw.metadata["expected_partition"].value == day
    cleaned = evaluations[("cleaned_text", checks.FRESHNESS_CHECK)]
    assert not cleaned.passed  # it has only the day before
    assert cleaned.severity == dg.AssetCheckSeverity.WARN
    assert cleaned.metadata["overdue_seconds"].value >= 0
    assert not any(e.passed for (asset, _), e in evaluations.items() if asset != "raw_text")


@dg.op
def report_model_materialisations():
    """What features and predictions would report (real events in the instance)."""
    yield dg.AssetMaterialization(
        "features",
        partition="2026-11-18",
        metadata={"model_fallback": 0, "cache_hits": 10, "cache_misses": 0},
    )
    yield dg.AssetMaterialization(
        "predictions",
        partition="2026-11-18",
        metadata={"model_fallback": 1, "cache_hits": 3, "cache_misses": 1},
    )
    yield dg.Output(None)


@dg.job
def model_materialisations_job():
    report_model_materialisations()


def test_model_health_reads_the_latest_materialisation() -> None:
    model_checks = checks.model_health_checks
    with dg.instance_for_test() as instance:
        assert model_materialisations_job.execute_in_process(instance=instance).success
        result = dg.materialize(
            [*all_assets, *model_checks],
            selection=dg.AssetSelection.checks(*model_checks),
            instance=instance,
            resources=build_resources(),
        )
    evaluations = _check_results(result)
    features = evaluations[("features", checks.MODEL_HEALTH_CHECK)]
    assert features.passed and features.metadata["cache_hit_ratio"].value == 1.0
    predictions = evaluations[("predictions", checks.MODEL_HEALTH_CHECK)]
    assert not predictions.passed and predictions.severity == dg.AssetCheckSeverity.WARN
    assert predictions.description == "a fallback model served this materialisation"
    assert predictions.metadata["partition"].value == "2026-11-18"


@pytest.mark.parametrize(
    ("schedule", "job", "tick"),
    [
        (daily_reports_schedule, "daily_reports", "2026-11-26T00:30:00+00:00"),
        (daily_pipeline_schedule, "daily_pipeline", "2026-11-26T01:00:00+00:00"),
    ],
)
def test_day_close_schedules_target_the_day_that_closed(schedule, job, tick) -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime.fromisoformat(tick),
        repository_def=defs.get_repository_def(),
    )
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-25"  # not today's open partition
    assert schedule.job_name == job


def test_reports_job_materialises_aggregates_quality_and_reports_only() -> None:
    job = defs.resolve_job_def("daily_reports")
    assert job.asset_layer.executable_asset_keys == {
        dg.AssetKey("aggregates"),
        dg.AssetKey("quality"),
        dg.AssetKey("reports"),
    }


def test_every_sensor_and_schedule_is_described() -> None:
    repository = defs.get_repository_def()
    described = [
        d
        for d in [*repository.sensor_defs, *repository.schedule_defs]
        if not d.name.startswith("default_automation_condition_sensor")  # Dagster's own
    ]
    names = {d.name for d in described}
    assert {
        "run_failure_alert_sensor",
        daily_reports_schedule.name,
        freshness_checks_schedule.name,
        daily_pipeline_schedule.name,
    } <= names
    assert all((d.description or "").strip() for d in described), [
        d.name for d in described if not (d.description or "").strip()
    ]


def test_pipeline_runs_the_model_health_checks_but_not_freshness() -> None:
    nodes = set(defs.resolve_job_def("daily_pipeline").graph.node_names())
    assert {"features_model_health", "predictions_model_health"} <= nodes
    assert "daily_partition_freshness" not in nodes
    assert set(defs.resolve_job_def("freshness_checks").graph.node_names()) == {
        "daily_partition_freshness"
    }
