"""The lake's maintenance as Dagster jobs a user can see and launch: compaction of a closed day,
vacuum of old files, log checkpoints (docs/lake.md "Maintenance").

- `lake_compact_day` (daily partitions): every daily table's files of one day rewritten into a
  few large ones (`Lake.compact`, one commit per table that changes no row), then a log
  checkpoint. `lake_compact_on_day_close` requests it after each successful run that wrote a
  closed day (the Kafka sensor's run once the day closed, the daily schedules, a backfill).
- `lake_vacuum` with `lake_vacuum_schedule` (daily, 02:15 UTC): every table's files that no
  version younger than `NLP_LAKE_VACUUM_RETENTION_HOURS` (default 168) needs are deleted, and
  log files past Delta's log retention with them. The retention must stay longer than the
  longest run or read (a reader of an old version, time travel): docs/lake.md.

What each job did is an `AssetObservation` on the asset whose table it touched (files before
and after, the table version), so the catalog shows it beside the asset's materialisations.
"""

from datetime import UTC, date, datetime

import dagster as dg

from nlp_assets import settings
from nlp_assets.lake import QUARANTINE, Lake
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.lake import PARTITION_TAG, LakeResource

COMPACT_JOB = "lake_compact_day"
VACUUM_JOB = "lake_vacuum"


def _asset_key(table: str) -> dg.AssetKey:
    """A quarantine table belongs to its stage's asset; any other table is an asset."""
    parts = table.split("/")
    return dg.AssetKey(parts[1] if parts[0] == QUARANTINE and len(parts) > 1 else parts[0])


def _daily_tables(lake: Lake) -> list[str]:
    return [t for t in lake.tables() if lake.is_daily(t)]


#: A compaction that lost a commit race to a writer of the same day (late data) starts again.
MAINTENANCE_RETRY = dg.RetryPolicy(max_retries=3, delay=10)


@dg.op(
    description="Compacts the day's files of every daily table, then checkpoints its log.",
    retry_policy=MAINTENANCE_RETRY,
)
def compact_day(context: dg.OpExecutionContext, lake: LakeResource) -> None:
    day = context.partition_key
    store = Lake(lake.root)
    for table in _daily_tables(store):
        before = len(store.files(table, [day]))
        figures = store.compact(table, day)
        store.checkpoint(table)
        after = len(store.files(table, [day]))
        context.log_event(
            dg.AssetObservation(
                asset_key=_asset_key(table),
                partition=day,
                metadata={
                    "lake_table": table,
                    "files_before": before,
                    "files_after": after,
                    "files_removed": int(figures.get("numFilesRemoved", 0)),
                    "table_version": store.version(table),
                },
            )
        )


@dg.op(
    description="Deletes every table's files that no version younger than the retention needs.",
    retry_policy=MAINTENANCE_RETRY,
)
def vacuum_lake(context: dg.OpExecutionContext, lake: LakeResource) -> None:
    hours = settings.lake_vacuum_retention_hours()
    store = Lake(lake.root)
    for table in store.tables():
        removed = store.vacuum(table, hours)
        store.checkpoint(table)
        context.log_event(
            dg.AssetObservation(
                asset_key=_asset_key(table),
                metadata={
                    "lake_table": table,
                    "vacuum_retention_hours": hours,
                    "files_deleted": len(removed),
                    "table_version": store.version(table),
                },
            )
        )


@dg.job(
    name=COMPACT_JOB,
    partitions_def=daily_partitions,
    description="Compacts one day of every lake table (micro-batch files into a few large ones) "
    "and checkpoints the tables' logs; requested when a day closes.",
    tags={"nlp/maintenance": "compact"},
)
def lake_compact_day_job() -> None:
    compact_day()


@dg.job(
    name=VACUUM_JOB,
    description="Vacuums every lake table: deletes the files no version younger than "
    "NLP_LAKE_VACUUM_RETENTION_HOURS needs (superseded parts, compacted files, orphans of a "
    "killed writer).",
    tags={"nlp/maintenance": "vacuum"},
)
def lake_vacuum_job() -> None:
    vacuum_lake()


lake_vacuum_schedule = dg.ScheduleDefinition(
    name="lake_vacuum_schedule",
    cron_schedule="15 2 * * *",
    job=lake_vacuum_job,
    execution_timezone="UTC",
    description="At 02:15 UTC vacuums every lake table with the configured retention.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


def closed_day(tags: dict[str, str], today: date) -> str | None:
    """The day a run wrote, when it is a single daily partition that has closed (UTC)."""
    day = tags.get(PARTITION_TAG)
    try:
        return day if day is not None and date.fromisoformat(day) < today else None
    except ValueError:
        return None


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="lake_compact_on_day_close",
    request_job=lake_compact_day_job,
    description="After a successful run that wrote a closed day (the Kafka sensor's last run "
    "of the day, the daily schedules, a backfill), compacts that day's lake files.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def lake_compact_on_day_close(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if run.job_name in (COMPACT_JOB, VACUUM_JOB):
        return dg.SkipReason("a maintenance run")
    day = closed_day(dict(run.tags), datetime.now(UTC).date())
    if day is None:
        return dg.SkipReason(f"run {run.run_id} did not write one closed day")
    return dg.RunRequest(run_key=f"{COMPACT_JOB}:{day}:{run.run_id}", partition_key=day)


maintenance_jobs = [lake_compact_day_job, lake_vacuum_job]
maintenance_schedules = [lake_vacuum_schedule]
maintenance_sensors = [lake_compact_on_day_close]
