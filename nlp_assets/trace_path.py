"""`nlp trace <doc_id>`: one document's path from the lake and the Dagster instance, with no
trace backend: where it came from (API, file, Kafka message), its trace, every commit of its
day and part with the run that made it, and each run's steps with their durations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from nlp_assets import settings, tracing
from nlp_assets.lake import QUARANTINE, Lake

RAW_ASSET = "raw_text"
PREDICTIONS = "predictions"
LOOKBACK_DAYS = 30


def _days(days: list[str] | None) -> list[str]:
    if days:
        return days
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=i)).isoformat() for i in range(LOOKBACK_DAYS)]


def _iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


def _run_facts(instance: Any, run_id: str) -> dict[str, Any]:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return {"run_id": run_id, "status": "not in this Dagster instance"}
    stats = instance.get_run_stats(run_id)
    steps = [
        {
            "step": step.step_key,
            "status": step.status.value if step.status else None,
            "seconds": round(step.end_time - step.start_time, 3)
            if step.start_time and step.end_time
            else None,
            "attempts": step.attempts,
        }
        for step in sorted(instance.get_run_step_stats(run_id), key=lambda s: s.start_time or 0.0)
    ]
    keep = ("dagster/partition", "nlp/part", "nlp/trigger", "nlp/traceparent", "nlp/kafka_range")
    return {
        "run_id": run_id,
        "job": run.job_name,
        "status": run.status.value,
        "started": datetime.fromtimestamp(stats.start_time, UTC).isoformat()
        if stats.start_time
        else None,
        "seconds": round(stats.end_time - stats.start_time, 3)
        if stats.start_time and stats.end_time
        else None,
        "tags": {k: v for k, v in run.tags.items() if k in keep or k.startswith("nlp/kafka")},
        "steps": steps,
    }


def document_path(
    doc_id: str, *, days: list[str] | None = None, lake: Lake | None = None, instance: Any = None
) -> dict[str, Any] | None:
    """The document's path, or None when no raw row of it is in `days` (default: last 30)."""
    lake = lake or Lake(settings.lake_dir())
    for day in _days(days):
        raw = lake.find(RAW_ASSET, [day], "doc_id", doc_id)
        if raw.height:
            break
    else:
        return None
    row = raw.row(0, named=True)
    path = lake.document_runs(doc_id, day, RAW_ASSET)
    traceparent = path["traceparent"]
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    prediction = lake.find(PREDICTIONS, [day], "doc_id", doc_id)
    quarantined = [
        {"table": table, "reason": hit["reason"][0]}
        for table in lake.tables()
        if table.startswith(f"{QUARANTINE}/")
        for hit in [lake.find(table, [day], "doc_id", doc_id)]
        if hit.height
    ]
    if instance is None:
        import dagster as dg

        instance = dg.DagsterInstance.get()
    run_ids = list(dict.fromkeys(c["run_id"] for c in path["runs"] if c["run_id"]))
    return {
        "doc_id": doc_id,
        "day": day,
        "part": path["part"],
        "source": {
            "source": row.get("source"),
            "source_id": row.get("source_id"),
            "event_time": row.get("event_time"),
            "file": row.get("file"),
            "kafka": metadata.get("kafka"),
        },
        "trace_id": tracing.trace_id_of(traceparent),
        "traceparent": traceparent,
        "prediction": prediction.row(0, named=True) if prediction.height else None,
        "quarantined": quarantined,
        "commits": [{**c, "time": _iso(c["time"])} for c in path["runs"]],
        "runs": [_run_facts(instance, run_id) for run_id in run_ids],
    }


def render(path: dict[str, Any]) -> str:
    source = path["source"]
    came = f"Kafka {source['kafka']}" if source.get("kafka") else f"file {source.get('file')}"
    lines = [
        f"{path['doc_id']}: day {path['day']}, part {path['part']}",
        f"  came from: {came} (source {source.get('source')}, id {source.get('source_id')})",
        f"  trace:     {path['trace_id'] or '-'}",
    ]
    prediction = path["prediction"]
    if prediction:
        lines.append(
            f"  predicted: {prediction.get('sentiment_label')} "
            f"({prediction.get('sentiment_model')}@{prediction.get('sentiment_model_version')})"
        )
    for hit in path["quarantined"]:
        lines.append(f"  quarantined in {hit['table']}: {hit['reason']}")
    for run in path["runs"]:
        lines.append(
            f"  run {run['run_id']} {run.get('job', '')} {run['status']} "
            f"{run.get('started') or ''} {run.get('seconds') or '-'} s"
        )
        for step in run.get("steps", []):
            lines.append(f"    {step['step']:<24} {step['status']:<8} {step['seconds']} s")
    for commit in path["commits"]:
        lines.append(
            f"  commit {commit['table']} v{commit['version']} {commit['time']} "
            f"run {commit['run_id'] or '-'}"
        )
    return "\n".join(lines)
