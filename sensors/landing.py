"""Landing-folder sensor: a day's files changed, so that day's partition is recomputed."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import dagster as dg

from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kernels.messages import KAFKA_LANDING_DIR
from nlp_assets.partitions import daily_partitions
from resources.folders import DayFolder

MAX_RUNS_PER_TICK = 10
#: Fingerprint of a day folder without files: nothing to materialise until something lands.
EMPTY_DAY = hashlib.sha256().hexdigest()[:16]


def _watched(path: Path, day_dir: Path) -> bool:
    """Files people drop. Not what Kafka micro-batches land under `kafka/`: their runs already
    processed them (a backfill of the day still reads them)."""
    relative = path.relative_to(day_dir).parts
    return path.is_file() and not path.name.startswith(".") and relative[0] != KAFKA_LANDING_DIR


def day_fingerprint(day_dir: Path) -> str:
    """Names, sizes and modification times of the day's files (never their content)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in day_dir.rglob("*") if _watched(p, day_dir)):
        stat = path.stat()
        digest.update(
            f"{path.relative_to(day_dir)}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()[:16]


def landed_days(root: Path) -> list[str]:
    days = []
    for child in sorted(root.iterdir()) if root.exists() else []:
        try:
            date.fromisoformat(child.name)
        except ValueError:
            continue
        if child.is_dir():
            days.append(child.name)
    return days


@dg.sensor(
    job=daily_pipeline_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Watches <landing>/<YYYY-MM-DD>/: when a day's files change, materialises that "
    f"day's partition. Cursor: the fingerprint of every day seen; at most {MAX_RUNS_PER_TICK} "
    "runs a tick.",
)
def landing_folder_sensor(context: dg.SensorEvaluationContext, landing: DayFolder):
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    valid = set(daily_partitions.get_partition_keys(dynamic_partitions_store=None))
    requests: list[dg.RunRequest] = []
    skipped: list[str] = []
    for day in landed_days(landing.path):
        fingerprint = day_fingerprint(landing.day_dir(day))
        if seen.get(day, EMPTY_DAY) == fingerprint:
            continue  # unchanged, or an empty folder never seen with files
        if day not in valid:
            skipped.append(day)
            continue
        if len(requests) == MAX_RUNS_PER_TICK:
            break  # the rest is picked up next tick: their cursor entries did not move
        requests.append(
            dg.RunRequest(
                run_key=f"landing:{day}:{fingerprint}",
                partition_key=day,
                tags={"nlp/trigger": "landing_folder"},
            )
        )
        seen[day] = fingerprint
    if skipped:
        context.log.warning(f"days outside the partitions, not materialised: {', '.join(skipped)}")
    if not requests:
        return dg.SensorResult(
            skip_reason=dg.SkipReason("no new or changed files in the landing folder"),
            cursor=json.dumps(seen, sort_keys=True),
        )
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
