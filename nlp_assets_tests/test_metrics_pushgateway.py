"""Stage metrics against a real Pushgateway: after a run, `/metrics` holds the right series."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets import metrics
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets_tests.services import pushgateway, scrape, series
from nlp_assets_tests.test_metrics_textfile import days_of_runs

pytestmark = pytest.mark.metrics

DAY = "2026-11-18"
DOCS = [
    {"id": "a1", "source": "shop", "text": "The delivery was quick and the parcel intact."},
    {"id": "a2", "source": "shop", "text": "Terrible support, nobody answered my e-mail."},
    {"id": "a3", "source": "shop", "text": "Works as described."},
    {"id": "a4", "source": "shop", "text": "<p>&nbsp;</p>"},  # empty once cleaned
]


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pushgateway(tmp_path) as url:
        monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, url)
        yield url


def _landing(root: Path) -> Path:
    day = root / "landing" / DAY
    day.mkdir(parents=True)
    lines = [json.dumps(doc) for doc in DOCS] + ["{not json"]  # quarantined by raw_text
    (day / "feedback.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "landing"


def _materialise(root: Path, landing: Path) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """Raw and cleaned text of DAY; the result and the run's log messages."""
    resources = build_resources(
        lake_dir=str(root / "lake"), landing_dir=str(landing), reports_dir=str(root / "reports")
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            all_assets,
            selection=["raw_text", "cleaned_text"],
            partition_key=DAY,
            instance=instance,
            resources=resources,
        )
        messages = [record.user_message for record in instance.all_logs(result.run_id)]
    return result, messages


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    ]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_a_run_pushes_one_group_per_stage_with_the_materialised_values(tmp_path, gateway):
    result, _ = _materialise(tmp_path, _landing(tmp_path))
    assert result.success
    samples = scrape(gateway)
    job = result.job_def.name
    for asset, rows, quarantined in (("raw_text", 4, 1), ("cleaned_text", 3, 1)):
        meta = _metadata(result, asset)
        group = {"job": job, "asset": asset, "partition": DAY}
        assert series(samples, "nlp_stage_docs_out", **group) == {
            frozenset(group.items()): float(rows)
        }, asset
        assert meta["quarantined"] == quarantined
        [[value]] = [series(samples, "nlp_stage_docs_quarantined", **group).values()]
        assert value == quarantined, asset
        [[docs_in]] = [series(samples, "nlp_stage_docs_in", **group).values()]
        assert docs_in == rows + quarantined, asset  # in = out + quarantined: nothing lost
        [[seconds]] = [series(samples, "nlp_stage_duration_seconds", **group).values()]
        assert seconds == pytest.approx(meta["seconds"]), asset
        [[start]] = [series(samples, metrics.PARTITION_START, **group).values()]
        assert start == 1_794_960_000.0  # 2026-11-18T00:00:00Z
        assert len(series(samples, metrics.LAST_SUCCESS, **group)) == 1
        # the gateway's own record of the push, one per group
        assert len(series(samples, "push_time_seconds", job=job, asset=asset)) == 1
    assert series(samples, "nlp_stage_docs_out", asset="tokens") == {}


def test_model_metadata_becomes_series_with_device_and_model_labels(gateway):
    where = metrics.export_stage_metrics(
        job="daily_pipeline",
        asset="features",
        partition=DAY,
        metadata={
            "docs_in": 120,
            "model_seconds": 3.5,
            "tokens_per_second": 4200.0,
            "batch_latency_ms": 250,
            "cache_hits": 90,
            "cache_misses": 30,
            "cache_errors": 0,
            "model_fallback": 0,
            "device": "cpu",
            "embedding_model": "all-MiniLM-L6-v2@abc123",
            "skipped_note": "not a number",
        },
        rows_out=120,
        now=1_800_000_000.0,
    )
    assert where == gateway
    samples = scrape(gateway)
    group = {"job": "daily_pipeline", "asset": "features", "partition": DAY, "device": "cpu"}
    expected = {
        "nlp_stage_docs_in": 120,
        "nlp_stage_docs_out": 120,
        "nlp_stage_model_seconds": 3.5,
        "nlp_stage_tokens_per_second": 4200,
        "nlp_stage_batch_latency_seconds": 0.25,
        "nlp_stage_cache_hits": 90,
        "nlp_stage_cache_misses": 30,
        "nlp_stage_cache_errors": 0,
        "nlp_stage_model_fallback": 0,
        metrics.LAST_SUCCESS: 1_800_000_000,
    }
    for name, value in expected.items():
        assert series(samples, name, **group) == {frozenset(group.items()): value}, name
    info = series(samples, metrics.MODEL_INFO, **group)
    assert info == {
        frozenset(
            {**group, "role": "embedding_model", "model": "all-MiniLM-L6-v2@abc123"}.items()
        ): 1.0
    }
    assert series(samples, "nlp_stage_dlq_messages") == {}  # not reported, not invented


def test_a_failure_is_recorded_until_the_stage_next_succeeds(gateway):
    group = {"job": "daily_pipeline", "asset": "predictions", "partition": DAY}
    metrics.export_stage_metrics(
        job="daily_pipeline", asset="predictions", partition=DAY, metadata={}, rows_out=7
    )
    metrics.export_stage_failure(
        job="daily_pipeline", assets=["predictions"], partition=DAY, now=1_800_000_100.0
    )
    samples = scrape(gateway)
    assert set(series(samples, metrics.FAILED, **group).values()) == {1.0}
    assert set(series(samples, metrics.LAST_FAILURE, **group).values()) == {1_800_000_100.0}
    # the failure is added beside the last success (POST), not replacing it
    assert set(series(samples, "nlp_stage_docs_out", **group).values()) == {7.0}

    metrics.export_stage_metrics(
        job="daily_pipeline", asset="predictions", partition=DAY, metadata={}, rows_out=8
    )
    samples = scrape(gateway)
    assert series(samples, metrics.FAILED, **group) == {}
    assert set(series(samples, "nlp_stage_docs_out", **group).values()) == {8.0}


def test_an_unreachable_gateway_warns_and_the_run_succeeds(tmp_path, monkeypatch):
    monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, "http://127.0.0.1:9")  # discard port: refused
    result, messages = _materialise(tmp_path, _landing(tmp_path))
    assert result.success
    assert len(result.get_asset_materialization_events()) == 2
    for asset in ("raw_text", "cleaned_text"):
        assert any(f"metrics of {asset}/{DAY} not exported" in m for m in messages), asset


def test_series_on_the_gateway_are_bounded_after_30_days_of_runs(gateway):
    days_of_runs(2)
    after_two = {key for key in scrape(gateway) if key[0].startswith("nlp_")}
    days_of_runs(28, first=3)
    after_thirty = {key for key in scrape(gateway) if key[0].startswith("nlp_")}
    assert len(after_thirty) == len(after_two)
    # only the latest partition's values are left
    partitions = {dict(labels).get("partition") for _, labels in after_thirty}
    assert partitions <= {"2026-01-30", "2026-01-29", "none"}
    assert {dict(labels)["job"] for _, labels in after_thirty} == {"daily_pipeline", "kafka_sensor"}
