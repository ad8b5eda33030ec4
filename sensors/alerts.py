"""Run-failure alerts: a webhook (Slack/Teams/Alertmanager-style JSON) and a Prometheus series.

The webhook URL is a secret: it comes from the environment variable `NLP_ALERT_WEBHOOK_URL`,
is never logged, and without it the sensor only records the failure metric.
"""

import json
import urllib.request
from collections.abc import Iterable
from typing import Any

import dagster as dg

from nlp_assets import metrics

ALERT_WEBHOOK_URL = dg.EnvVar("NLP_ALERT_WEBHOOK_URL")
#: Optional base URL of the Dagster UI, so the alert links to the run.
DAGSTER_UI_URL = dg.EnvVar("NLP_DAGSTER_UI_URL")
WEBHOOK_TIMEOUT_S = 10
MAX_ERROR_CHARS = 2_000
PARTITION_TAG = "dagster/partition"


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
    """POST the payload as JSON; raises on a non-2xx answer (the sensor retries next tick)."""
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
    text = f"{root.cls_name}: {root.message.strip()}"
    return text if root is error else f"{text} (after: {error.message.strip()})"


def _error_of(context: dg.RunFailureSensorContext) -> tuple[list[str], str]:
    step_failures = context.get_step_failure_events()
    steps = [event.step_key for event in step_failures if event.step_key]
    errors = []
    for event in step_failures:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            errors.append(f"{event.step_key}: {_root_cause(error)}")
    if not errors:
        errors.append(context.failure_event.message or "run failed (no step failure recorded)")
    return steps, "\n".join(errors)


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    description="When a run of this code location fails, posts an alert (run id, job, failed "
    "asset(s), partition, error) to the webhook in NLP_ALERT_WEBHOOK_URL and records "
    "nlp_stage_failed for Prometheus. A failed post fails the tick, so the alert is retried.",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    steps, error = _error_of(context)
    assets = failed_assets(context.instance, run, steps)
    metrics.export_stage_failure(
        job=run.job_name, assets=assets, partition=run.tags.get(PARTITION_TAG)
    )
    url = ALERT_WEBHOOK_URL.get_value()
    if not url:
        return dg.SkipReason(
            f"{ALERT_WEBHOOK_URL.env_var_name} is not set: failure of run {run.run_id} "
            "recorded as a metric only"
        )
    payload = alert_payload(
        run=run, assets=assets, failed_steps=steps, error=error, ui_url=DAGSTER_UI_URL.get_value()
    )
    status = post_webhook(url, payload)
    context.log.info(f"alert for run {run.run_id} posted (HTTP {status})")
