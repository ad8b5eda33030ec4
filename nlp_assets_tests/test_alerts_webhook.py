"""The run-failure sensor against a real failed run and a local HTTP webhook receiver."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from nlp_assets import metrics
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets_tests.services import WebhookReceiver
from sensors import alerts

DAY = "2026-11-18"


@pytest.fixture
def textfiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    monkeypatch.setenv(metrics.TEXTFILE_DIR_ENV, str(tmp_path / "textfiles"))
    monkeypatch.delenv(alerts.DAGSTER_UI_URL.env_var_name, raising=False)
    return tmp_path / "textfiles"


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory):
    """raw_text of DAY, failing for real: the lake folder sits below a plain file."""
    root = tmp_path_factory.mktemp("alerts")
    (root / "landing" / DAY).mkdir(parents=True)
    (root / "landing" / DAY / "one.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    (root / "not-a-folder").write_text("")
    resources = build_resources(
        lake_dir=str(root / "not-a-folder" / "lake"),
        landing_dir=str(root / "landing"),
        reports_dir=str(root / "reports"),
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            all_assets,
            selection=["raw_text"],
            partition_key=DAY,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert not result.success
        yield instance, result


def _sensor_context(instance: dg.DagsterInstance, run_id: str) -> dg.RunFailureSensorContext:
    run = instance.get_run_by_id(run_id)
    [failure] = instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE)
    return dg.build_run_status_sensor_context(
        sensor_name=alerts.run_failure_alert_sensor.name,
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=failure.dagster_event,
    ).for_run_failure()


def test_alert_names_run_job_asset_partition_and_error(failed_run, textfiles, monkeypatch):
    instance, result = failed_run
    with WebhookReceiver() as receiver:
        monkeypatch.setenv(alerts.ALERT_WEBHOOK_URL.env_var_name, receiver.url)
        monkeypatch.setenv(alerts.DAGSTER_UI_URL.env_var_name, "http://dagster.example:3000/")
        alerts.run_failure_alert_sensor(_sensor_context(instance, result.run_id))
    [body] = receiver.bodies
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert body["run_id"] == result.run_id
    assert body["job"] == result.job_def.name
    assert body["assets"] == ["raw_text"]
    assert body["partition"] == DAY
    assert body["failed_steps"] == ["raw_text"]
    assert body["error"].startswith("raw_text: ")
    # the cause, not the retry wrapper: the lake path is under a file
    assert body["error"].startswith("raw_text: NotADirectoryError: "), body["error"]
    assert "Exceeded max_retries of 2" in body["error"]
    assert body["run_url"] == f"http://dagster.example:3000/runs/{result.run_id}"
    assert body["text"].startswith(f"Dagster run {result.run_id[:8]} of ")
    assert f"failed in raw_text (partition {DAY})" in body["text"]
    # and the failure is a Prometheus series until raw_text next succeeds
    [failed] = list(textfiles.iterdir())
    assert failed.name == f"{result.job_def.name}__raw_text__{DAY}.failed.prom"
    assert 'nlp_stage_failed{asset="raw_text"' in failed.read_text()


def test_a_webhook_that_refuses_fails_the_tick_so_it_is_retried(failed_run, textfiles, monkeypatch):
    instance, result = failed_run
    with WebhookReceiver(status=500) as receiver:
        monkeypatch.setenv(alerts.ALERT_WEBHOOK_URL.env_var_name, receiver.url)
        with pytest.raises(urllib.error.HTTPError, match="500"):
            alerts.run_failure_alert_sensor(_sensor_context(instance, result.run_id))
    assert len(receiver.bodies) == 1


def test_without_a_webhook_url_the_failure_is_a_metric_only(failed_run, textfiles, monkeypatch):
    instance, result = failed_run
    monkeypatch.delenv(alerts.ALERT_WEBHOOK_URL.env_var_name, raising=False)
    skip = alerts.run_failure_alert_sensor(_sensor_context(instance, result.run_id))
    assert isinstance(skip, dg.SkipReason)
    assert "NLP_ALERT_WEBHOOK_URL is not set" in skip.skip_message
    assert [p.name for p in textfiles.iterdir()] == [
        f"{result.job_def.name}__raw_text__{DAY}.failed.prom"
    ]


def test_payload_shortens_long_errors_and_keeps_json_safe() -> None:
    run = dg.DagsterRun(job_name="daily_pipeline", run_id="0123456789abcdef", tags={})
    payload = alerts.alert_payload(
        run=run, assets=[], failed_steps=[], error="x" * 5000 + "\nsecond line"
    )
    assert len(payload["error"]) == alerts.MAX_ERROR_CHARS + 1
    assert payload["partition"] is None and payload["run_url"] is None
    assert payload["text"].startswith("Dagster run 01234567 of daily_pipeline failed in no asset:")
    json.dumps(payload)


def test_the_sensor_is_registered_running_and_described() -> None:
    from nlp_assets.definitions import defs

    sensor = defs.resolve_sensor_def("run_failure_alert_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert "NLP_ALERT_WEBHOOK_URL" in (sensor.description or "")
