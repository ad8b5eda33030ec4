"""Run-failure alerts, by ticking the real sensor on an instance holding a really failed run,
against a local HTTP webhook receiver.

Each tick starts from the cursor the previous tick returned, as the sensor daemon does (it
stores the cursor of a tick that returned, and keeps the old one when a tick raises).
"""

from __future__ import annotations

import errno
import itertools
import json
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorCursor

from nlp_assets import metrics
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.sensors import alerts
from nlp_assets_tests.services import WebhookReceiver

DAY = "2026-11-18"
SECRET_PATH = "/hooks/T000/B000/s3cret-webhook-token"


@pytest.fixture
def textfiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    monkeypatch.setenv(metrics.TEXTFILE_DIR_ENV, str(tmp_path / "textfiles"))
    monkeypatch.delenv(alerts.DAGSTER_UI_URL.env_var_name, raising=False)
    return tmp_path / "textfiles"


class Clock:
    """The sensor's clock, moved by the test (retry back-off is in wall-clock seconds)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(alerts, "clock", clock)
    return clock


class FullDiskIOManager(dg.ConfigurableIOManager):
    """The lake's disk is full: storing a stage's output fails (after its compute ran)."""

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def load_input(self, context: dg.InputContext) -> object:
        raise NotImplementedError


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory):
    """An instance whose alert sensor was already running when raw_text of DAY failed for
    real (its output could not be stored); yields the instance, the run and the sensor's
    cursor from before the failure."""
    root = tmp_path_factory.mktemp("alerts")
    (root / "landing" / DAY).mkdir(parents=True)
    (root / "landing" / DAY / "one.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    resources = build_resources(
        lake_dir=str(root / "lake"),
        landing_dir=str(root / "landing"),
        reports_dir=str(root / "reports"),
    )
    resources["lake_io_manager"] = FullDiskIOManager()
    with dg.instance_for_test() as instance:
        first = alerts.run_failure_alert_sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance)
        )
        assert "watching run failures from here" in (first.skip_message or "")
        result = dg.materialize(
            all_assets,
            selection=["raw_text"],
            partition_key=DAY,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert not result.success
        yield instance, result, first.cursor


def tick(instance: dg.DagsterInstance, cursor: str | None):
    """One evaluation of the sensor as the daemon runs it: the tick's data (cursor, skip
    message)."""
    return alerts.run_failure_alert_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor)
    )


def pending(cursor: str) -> list[dict]:
    return json.loads(cursor)["pending"]


def test_alert_names_run_job_asset_partition_and_error(failed_run, textfiles, clock, monkeypatch):
    instance, result, cursor = failed_run
    with WebhookReceiver() as receiver:
        monkeypatch.setenv(alerts.ALERT_WEBHOOK_URL.env_var_name, receiver.url)
        monkeypatch.setenv(alerts.DAGSTER_UI_URL.env_var_name, "http://dagster.example:3000/")
        data = tick(instance, cursor)
    [body] = receiver.bodies
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert body["run_id"] == result.run_id
    assert body["job"] == result.job_def.name
    assert body["assets"] == ["raw_text"]
    assert body["partition"] == DAY
    assert body["failed_steps"] == ["raw_text"]
    # the cause, not Dagster's wrapper: the disk is full
    assert body["error"].startswith("raw_text: OSError: [Errno 28] No space left"), body["error"]
    assert "Exceeded max_retries of 2" in body["error"]  # and that the step was retried
    assert body["run_url"] == f"http://dagster.example:3000/runs/{result.run_id}"
    assert body["text"].startswith(f"Dagster run {result.run_id[:8]} of ")
    assert f"failed in raw_text (partition {DAY})" in body["text"]
    assert pending(data.cursor) == []  # delivered: nothing left in the outbox
    assert "1 delivered" in data.skip_message
    # and the failure is a Prometheus series until raw_text next succeeds
    [failed] = list(textfiles.iterdir())
    assert failed.name == f"{result.job_def.name}__raw_text.failed.prom"  # one per job and asset
    text = failed.read_text()
    assert 'nlp_stage_failed{asset="raw_text"' in text and f'partition="{DAY}"' in text


def test_a_refusing_webhook_gets_the_alert_exactly_once_after_it_recovers(
    failed_run, textfiles, clock, monkeypatch, capfd
):
    instance, result, cursor = failed_run
    capfd.readouterr()  # the sensor's log from here on
    with WebhookReceiver(fail_first=3, path=SECRET_PATH) as receiver:
        monkeypatch.setenv(alerts.ALERT_WEBHOOK_URL.env_var_name, receiver.url)
        messages, posted_at = [], []
        for _ in range(12):  # a tick every 30 s for 6 minutes
            posts = len(receiver.statuses)
            data = tick(instance, cursor)  # never raises: the daemon stores the cursor
            cursor = data.cursor
            messages.append(data.skip_message or "")
            if len(receiver.statuses) > posts:
                posted_at.append(clock.now)
            clock.now += 30
    assert receiver.statuses == [500, 500, 500, 200]  # retried until it answered 2xx, then not
    assert {body["run_id"] for body in receiver.bodies} == {result.run_id}
    assert receiver.bodies[-1] == receiver.bodies[0]  # the same alert each time
    assert pending(cursor) == []
    intervals = [b - a for a, b in itertools.pairwise(posted_at)]
    assert intervals == [30, 60, 120]  # exponential back-off between attempts
    assert "1 pending" in messages[0] and "HTTP Error 500" in messages[0]
    assert any("1 delivered" in m for m in messages)
    # the metric is recorded once, when the failure is first seen
    assert len(list(textfiles.iterdir())) == 1
    # the webhook URL is a secret: in no cursor, tick message or log line
    log = "".join(capfd.readouterr())
    assert "not delivered (attempt 3" in log and "delivered (HTTP 200)" in log
    seen = [cursor, *messages, log]
    assert not any("s3cret-webhook-token" in text for text in seen)


def test_an_unreachable_webhook_keeps_the_alert_until_one_is_reachable(
    failed_run, textfiles, clock, monkeypatch
):
    instance, result, cursor = failed_run
    with WebhookReceiver() as receiver:
        pass  # started and stopped: its port now refuses connections
    monkeypatch.setenv(alerts.ALERT_WEBHOOK_URL.env_var_name, receiver.url)
    data = tick(instance, cursor)
    [queued] = pending(data.cursor)
    assert queued["run_id"] == result.run_id and queued["attempts"] == 1
    assert "Connection refused" in queued["last_error"]
    clock.now += 3600
    with WebhookReceiver() as recovered:
        monkeypatch.setenv(alerts.ALERT_WEBHOOK_URL.env_var_name, recovered.url)
        data = tick(instance, data.cursor)
    assert [body["run_id"] for body in recovered.bodies] == [result.run_id]
    assert pending(data.cursor) == []


def test_without_a_webhook_url_the_failure_is_a_metric_only(
    failed_run, textfiles, clock, monkeypatch
):
    instance, result, cursor = failed_run
    monkeypatch.delenv(alerts.ALERT_WEBHOOK_URL.env_var_name, raising=False)
    data = tick(instance, cursor)
    assert "NLP_ALERT_WEBHOOK_URL is not set" in data.skip_message
    assert pending(data.cursor) == []
    assert [p.name for p in textfiles.iterdir()] == [f"{result.job_def.name}__raw_text.failed.prom"]


def test_a_failure_before_the_sensor_first_ran_is_not_alerted(failed_run, textfiles, clock):
    instance, _, _ = failed_run
    data = tick(instance, None)  # a sensor switched on after the failure
    assert "watching run failures from here" in data.skip_message
    assert pending(data.cursor) == []
    assert not textfiles.exists()


def test_the_cursor_of_the_former_run_failure_sensor_is_continued(
    failed_run, textfiles, clock, monkeypatch
):
    """Upgrading from the `@run_failure_sensor` of the same name: its cursor's record id is
    where this sensor starts, so no failure in between is lost or alerted twice."""
    instance, result, cursor = failed_run
    legacy = RunStatusSensorCursor(
        record_id=json.loads(cursor)["after"], update_timestamp=None, record_timestamp=None
    ).to_json()
    with WebhookReceiver() as receiver:
        monkeypatch.setenv(alerts.ALERT_WEBHOOK_URL.env_var_name, receiver.url)
        tick(instance, legacy)
    assert [body["run_id"] for body in receiver.bodies] == [result.run_id]


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
    description = sensor.description or ""
    assert "NLP_ALERT_WEBHOOK_URL" in description
    assert "until the webhook answers 2xx" in description
    assert "fails the tick" not in description
