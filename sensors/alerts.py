"""Run-failure alerts: a webhook (Slack/Teams/Alertmanager-style JSON) and a Prometheus series.

Alerts are delivered at least once. Dagster's `@run_failure_sensor` advances its cursor even
when its tick raises, so a post that failed there was never retried. `run_failure_alert_sensor`
is a plain sensor instead, and its cursor is the outbox. Each tick it

1. reads the run failures recorded after its cursor (the instance's run-status events, the
   same ones a run-failure sensor reads; runs of this code location only), records
   `nlp_stage_failed` for Prometheus and queues one alert per failed run;
2. posts the alerts that are due; an alert the webhook answers 2xx leaves the outbox, a failed
   one is tried again after an exponential back-off (RETRY_BASE_S doubling up to RETRY_MAX_S),
   and a failed post ends the tick's posting (the webhook is down: the others wait).

The sensor daemon stores a sensor's cursor only when its tick returns, in the instance's own
storage (SQLite locally, Postgres in production): queued alerts survive restarts, and a tick
that crashes is redone from the previous cursor. So an alert arrives at least once (twice if a
tick crashes between a post and the store), as long as fewer than MAX_PENDING are undelivered.

The webhook URL is a secret: it comes from the environment variable `NLP_ALERT_WEBHOOK_URL`,
is never logged nor kept in the cursor, and without it the sensor only records the metric.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from nlp_assets import metrics
from nlp_assets.resources.warehouse import redact_url

ALERT_WEBHOOK_URL = dg.EnvVar("NLP_ALERT_WEBHOOK_URL")
#: Optional base URL of the Dagster UI, so the alert links to the run.
DAGSTER_UI_URL = dg.EnvVar("NLP_DAGSTER_UI_URL")
WEBHOOK_TIMEOUT_S = 10
MAX_ERROR_CHARS = 2_000
PARTITION_TAG = "dagster/partition"

CURSOR_VERSION = 1
#: Back-off after a failed post: 30 s, 60 s, 120 s ... up to 30 min between attempts.
RETRY_BASE_S = 30
RETRY_MAX_S = 1_800
#: Bounds of one tick (a sensor tick times out after 60 s).
MAX_FAILURES_PER_TICK = 50
MAX_POSTS_PER_TICK = 10
POST_BUDGET_S = 30
#: Undelivered alerts kept; past it the oldest are dropped with an error in the log (keeps the
#: cursor under ~1.5 MB when the webhook is gone for good).
MAX_PENDING = 500


def clock() -> float:
    """Wall-clock seconds (tests move it to check the back-off)."""
    return time.time()


def failed_assets(
    instance: dg.DagsterInstance, run: dg.DagsterRun, failed_steps: Iterable[str]
) -> list[str]:
    """The assets the failed steps materialise; the run's whole selection when no step failed
    (the run worker died, or the run failed before any step started)."""
    steps = set(failed_steps)
    keys: set[dg.AssetKey] = set()
    if steps and run.execution_plan_snapshot_id:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        for step in plan.steps:
            if step.key in steps:
                keys |= {
                    output.properties.asset_key
                    for output in step.outputs
                    if output.properties and output.properties.asset_key
                }
    if not keys:
        keys = set(run.asset_selection or ())
    return sorted(key.to_user_string() for key in keys)


def alert_payload(
    *,
    run: dg.DagsterRun,
    assets: list[str],
    failed_steps: list[str],
    error: str,
    ui_url: str | None = None,
) -> dict[str, Any]:
    """The JSON body of one alert: machine-readable fields and a one-line `text` for chats."""
    partition = run.tags.get(PARTITION_TAG)
    error = error if len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS] + "…"
    run_url = f"{ui_url.rstrip('/')}/runs/{run.run_id}" if ui_url else None
    where = ", ".join(assets) or "no asset"
    first_line = error.splitlines()[0] if error else ""
    in_partition = f" (partition {partition})" if partition else ""
    text = f"Dagster run {run.run_id[:8]} of {run.job_name} failed in {where}{in_partition}: "
    text += first_line
    return {
        "status": "failed",
        "run_id": run.run_id,
        "job": run.job_name,
        "assets": assets,
        "partition": partition,
        "failed_steps": failed_steps,
        "error": error,
        "run_url": run_url,
        "text": text,
    }


def post_webhook(url: str, payload: dict[str, Any]) -> int:
    """POST the payload as JSON; raises on a non-2xx answer (the alert stays in the outbox)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
        return response.status


def _root_cause(error: Any) -> str:
    """The innermost cause (the user's exception, not Dagster's retry or step wrapper)."""
    root = error
    while getattr(root, "cause", None) is not None:
        root = root.cause
    message = root.message.strip()
    # Dagster's error message usually starts with the class name already
    text = message if message.startswith(f"{root.cls_name}:") else f"{root.cls_name}: {message}"
    return text if root is error else f"{text} (after: {error.message.strip()})"


def _error_of(
    instance: dg.DagsterInstance, run_id: str, failure_message: str | None
) -> tuple[list[str], str]:
    """The failed steps of a run and the root cause of each (the run's own failure message
    when no step failed)."""
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    step_failures = [record.dagster_event for record in records if record.dagster_event]
    steps = [event.step_key for event in step_failures if event.step_key]
    errors = []
    for event in step_failures:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            errors.append(f"{event.step_key}: {_root_cause(error)}")
    if not errors:
        errors.append(failure_message or "run failed (no step failure recorded)")
    return steps, "\n".join(errors)


# -- the outbox (the sensor's cursor) ---------------------------------------------------------


@dataclass
class Outbox:
    """`after`: the storage id of the last run-failure event seen; `pending`: alerts not yet
    answered 2xx, each {run_id, payload, attempts, next_attempt, last_error}."""

    after: int
    pending: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> Outbox | None:
        """The outbox in a cursor; None for no (or an unreadable) cursor. The cursor of the
        former `@run_failure_sensor` of the same name continues from its record id."""
        try:
            data = json.loads(cursor) if cursor else None
        except ValueError:
            return None
        if isinstance(data, dict) and data.get("v") == CURSOR_VERSION:
            return cls(int(data["after"]), list(data["pending"]))
        if isinstance(data, dict) and isinstance(data.get("record_id"), int):
            return cls(data["record_id"])
        return None

    def to_cursor(self) -> str:
        return json.dumps(
            {"v": CURSOR_VERSION, "after": self.after, "pending": self.pending},
            separators=(",", ":"),
        )


def backoff_seconds(attempts: int) -> float:
    return min(RETRY_BASE_S * 2 ** max(attempts - 1, 0), RETRY_MAX_S)


def _describe(error: Exception, url: str) -> str:
    """An error of a post, safe to store and log: never the URL (it is the secret)."""
    text = f"{type(error).__name__}: {error}".replace(url, "***") if url else str(error)
    return redact_url(text)[:300]


def _latest_failure_id(instance: dg.DagsterInstance) -> int:
    records = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1).records
    return records[0].storage_id if records else -1


def _of_this_location(context: dg.SensorEvaluationContext, run: dg.DagsterRun) -> bool:
    """As `@run_failure_sensor` decides by default: the run's code location and repository are
    the sensor's (both unset for runs and contexts built in tests)."""
    origin = run.remote_job_origin
    location = origin.repository_origin.code_location_origin.location_name if origin else None
    repository = origin.repository_origin.repository_name if origin else None
    sensor_origin = context.code_location_origin
    sensor_location = sensor_origin.location_name if sensor_origin else None
    return (location, repository) == (sensor_location, context.repository_name)


def _queue_new_failures(
    context: dg.SensorEvaluationContext, outbox: Outbox, url: str, now: float
) -> int:
    """Record and (with a webhook URL) queue the failures after `outbox.after`, due `now`;
    the count."""
    instance = context.instance
    records = instance.fetch_run_status_changes(
        dg.RunStatusChangeRecordsFilter(
            event_type=dg.DagsterEventType.RUN_FAILURE, after_storage_id=outbox.after
        ),
        limit=MAX_FAILURES_PER_TICK,
        ascending=True,
    ).records
    queued = {alert["run_id"] for alert in outbox.pending}
    seen = 0
    for record in records:
        outbox.after = max(outbox.after, record.storage_id)
        entry = record.event_log_entry
        run = instance.get_run_by_id(entry.run_id)
        if run is None or not _of_this_location(context, run) or run.run_id in queued:
            continue
        seen += 1
        steps, error = _error_of(
            instance, run.run_id, entry.dagster_event.message if entry.dagster_event else None
        )
        assets = failed_assets(instance, run, steps)
        metrics.export_stage_failure(
            job=run.job_name, assets=assets, partition=run.tags.get(PARTITION_TAG)
        )
        if not url:
            continue
        payload = alert_payload(
            run=run,
            assets=assets,
            failed_steps=steps,
            error=error,
            ui_url=DAGSTER_UI_URL.get_value(),
        )
        outbox.pending.append(
            {
                "run_id": run.run_id,
                "payload": payload,
                "attempts": 0,
                "next_attempt": now,
                "last_error": None,
            }
        )
        queued.add(run.run_id)
    return seen


def _deliver_due(context: dg.SensorEvaluationContext, outbox: Outbox, url: str, now: float) -> int:
    """Post the due alerts, oldest first; the number the webhook accepted."""
    due = sorted(
        (alert for alert in outbox.pending if alert["next_attempt"] <= now),
        key=lambda alert: alert["next_attempt"],
    )
    delivered, started = 0, time.monotonic()
    for alert in due[:MAX_POSTS_PER_TICK]:
        if time.monotonic() - started > POST_BUDGET_S:
            break
        try:
            status = post_webhook(url, alert["payload"])
        except Exception as error:
            alert["attempts"] += 1
            alert["last_error"] = _describe(error, url)
            alert["next_attempt"] = now + backoff_seconds(alert["attempts"])
            context.log.warning(
                f"alert for run {alert['run_id']} not delivered (attempt {alert['attempts']}: "
                f"{alert['last_error']}); next attempt in {backoff_seconds(alert['attempts'])} s"
            )
            break  # the webhook is failing: the other due alerts wait for the next tick
        outbox.pending.remove(alert)
        delivered += 1
        context.log.info(f"alert for run {alert['run_id']} delivered (HTTP {status})")
    return delivered


def _drop_overflow(context: dg.SensorEvaluationContext, outbox: Outbox) -> int:
    extra = len(outbox.pending) - MAX_PENDING
    if extra <= 0:
        return 0
    dropped, outbox.pending = outbox.pending[:extra], outbox.pending[extra:]
    context.log.error(
        f"{extra} undelivered alerts dropped (more than {MAX_PENDING} pending), runs "
        + ", ".join(alert["run_id"] for alert in dropped)
    )
    return extra


@dg.sensor(
    name="run_failure_alert_sensor",
    description="When a run of this code location fails, records nlp_stage_failed for "
    "Prometheus and queues an alert (run id, job, failed asset(s), partition, error) in the "
    "sensor's cursor; each tick posts the due alerts to the webhook in NLP_ALERT_WEBHOOK_URL "
    f"and retries a failed post with exponential back-off ({RETRY_BASE_S} s doubling to "
    f"{RETRY_MAX_S // 60} min) until the webhook answers 2xx. At least once: an alert can "
    f"arrive twice, never not at all (while fewer than {MAX_PENDING} are undelivered).",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_alert_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    outbox = Outbox.from_cursor(context.cursor)
    if outbox is None:  # first tick: failures from before the sensor ran are not alerted
        outbox = Outbox(_latest_failure_id(context.instance))
        return dg.SensorResult(
            skip_reason=f"watching run failures from here (after event {outbox.after})",
            cursor=outbox.to_cursor(),
        )
    url = ALERT_WEBHOOK_URL.get_value() or ""
    now = clock()
    new = _queue_new_failures(context, outbox, url, now)
    dropped = _drop_overflow(context, outbox)
    delivered = _deliver_due(context, outbox, url, now) if url else 0
    parts = [f"{new} new run failure(s)", f"{delivered} delivered"]
    if outbox.pending:
        oldest = min(outbox.pending, key=lambda alert: alert["next_attempt"])
        wait = max(0, round(oldest["next_attempt"] - now))
        parts.append(
            f"{len(outbox.pending)} pending (next attempt in {wait} s; last error: "
            f"{oldest['last_error']})"
        )
    if dropped:
        parts.append(f"{dropped} dropped")
    if not url:
        parts.append(
            f"{ALERT_WEBHOOK_URL.env_var_name} is not set: failures recorded as a metric only"
        )
    return dg.SensorResult(skip_reason="; ".join(parts), cursor=outbox.to_cursor())
