"""Landing-folder sensor: a day's files changed and hold still, so that day's partition is
recomputed.

A file still being copied must not start a run: a day runs when its fingerprint (names, sizes,
modification times) is the same on two ticks in a row, or at once when the day folder holds the
completion marker `_SUCCESS` (the writer's "this day is complete now"). A copy that stalls for a
whole tick interval can still be run half-copied; the rest of it changes the fingerprint, so the
day runs again with the whole file. Writers that can should copy under a hidden name (`.name`,
never read) and rename, or write the marker last.

Cursor (JSON): `{"done": {day: fingerprint run}, "pending": {day: fingerprint seen once}}`; a
cursor of the older shape `{day: fingerprint}` is read as `done`.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from pathlib import Path

import dagster as dg

from nlp_assets import tracing
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kafka.messages import KAFKA_LANDING_DIR
from nlp_assets.kernels.ingest import COMPLETION_MARKER, landing_entries
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.folders import DayFolder

MAX_RUNS_PER_TICK = 10
#: Fingerprint of a day folder without files: nothing to materialise until something lands.
EMPTY_DAY = hashlib.sha256().hexdigest()[:16]


def day_fingerprint(day_dir: Path) -> str:
    """Names, sizes and modification times of the entries the day's run reads or refuses
    (symbolic links themselves, never their targets; never any content). Not what Kafka
    micro-batches land under `kafka/`: their runs already processed them (a backfill of the day
    still reads them), and not the completion marker."""
    digest = hashlib.sha256()
    for path in landing_entries(day_dir):
        relative = path.relative_to(day_dir)
        if relative.parts and relative.parts[0] == KAFKA_LANDING_DIR:
            continue
        info = os.lstat(path)
        digest.update(f"{relative}\x1f{info.st_size}\x1f{info.st_mtime_ns}\n".encode())
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


def _read_cursor(cursor: str | None) -> tuple[dict[str, str], dict[str, str]]:
    state = json.loads(cursor) if cursor else {}
    if "done" not in state:  # the shape before pending fingerprints: {day: fingerprint}
        return state, {}
    return state["done"], state["pending"]


@dg.sensor(
    job=daily_pipeline_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Watches <landing>/<YYYY-MM-DD>/: when a day's files change, materialises that "
    "day's partition once they hold still: its fingerprint (names, sizes, modification times) "
    f"unchanged over two ticks, or at once when the day holds a `{COMPLETION_MARKER}` marker "
    "file. A file still being copied does not start a run. Cursor: per day, the fingerprint "
    f"last run and the one waiting for a second look; at most {MAX_RUNS_PER_TICK} runs a tick.",
)
def landing_folder_sensor(context: dg.SensorEvaluationContext, landing: DayFolder):
    tracing.configure("nlp-sensors")
    with tracing.span("sensor landing_folder_sensor", {"nlp.landing": str(landing.path)}):
        return _landing_tick(context, landing)


def _landing_tick(context: dg.SensorEvaluationContext, landing: DayFolder) -> dg.SensorResult:
    done, pending = _read_cursor(context.cursor)
    valid = set(daily_partitions.get_partition_keys(dynamic_partitions_store=None))
    requests: list[dg.RunRequest] = []
    waiting: dict[str, str] = {}
    skipped: list[str] = []
    for day in landed_days(landing.path):
        day_dir = landing.day_dir(day)
        fingerprint = day_fingerprint(day_dir)
        if done.get(day, EMPTY_DAY) == fingerprint:
            continue  # unchanged, or an empty folder never seen with files
        if day not in valid:
            skipped.append(day)
            continue
        settled = pending.get(day) == fingerprint or (day_dir / COMPLETION_MARKER).is_file()
        if not settled or len(requests) == MAX_RUNS_PER_TICK:
            waiting[day] = fingerprint  # looked at again next tick (over the limit: run then)
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"landing:{day}:{fingerprint}",
                partition_key=day,
                tags={"nlp/trigger": "landing_folder", **tracing.run_tags()},
            )
        )
        done[day] = fingerprint
    if skipped:
        context.log.warning(f"days outside the partitions, not materialised: {', '.join(skipped)}")
    cursor = json.dumps({"done": done, "pending": waiting}, sort_keys=True)
    if not requests:
        reason = (
            f"waiting for the files of {', '.join(sorted(waiting))} to hold still"
            if waiting
            else "no new or changed files in the landing folder"
        )
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
