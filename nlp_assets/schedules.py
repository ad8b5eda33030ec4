from datetime import timedelta
from typing import Any

import dagster as dg

from nlp_assets.checks import daily_partition_freshness
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.stages.common import DAY_SCOPE


def yesterday(context: dg.ScheduleEvaluationContext) -> str:
    """The UTC day before the tick. (`build_schedule_from_partitioned_job` would pick the last
    partition, which with `end_offset=1` is today's, still open.)"""
    return (context.scheduled_execution_time.date() - timedelta(days=1)).isoformat()


def yesterday_schedule(name: str, job: Any, cron: str, description: str) -> dg.ScheduleDefinition:
    """A daily UTC schedule (off by default) that runs `job` for the day that just closed."""

    @dg.schedule(
        name=name,
        cron_schedule=cron,
        job=job,
        execution_timezone="UTC",
        description=description,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = yesterday(context)
        return dg.RunRequest(run_key=f"{job.name}:{day}", partition_key=day)

    return _schedule


#: After the UTC day has closed, recompute it whole: late files are in and the report is final.
daily_pipeline_schedule = yesterday_schedule(
    "daily_pipeline_schedule",
    daily_pipeline_job,
    "0 1 * * *",
    "Materialises yesterday's partition (all eight stages) at 01:00 UTC.",
)


daily_reports_job = dg.define_asset_job(
    "daily_reports",
    selection=DAY_SCOPE,
    description="Aggregates, quality figures and the report of one day, recomputed from all of "
    "the day's parts.",
)


#: Micro-batches fill a day through its parts; once the day has closed its aggregates and
#: report are recomputed from all of them, so the report is final.
daily_reports_schedule = yesterday_schedule(
    "daily_reports_schedule",
    daily_reports_job,
    "30 0 * * *",
    "At 00:30 UTC, after the UTC day closed, materialises aggregates and reports of yesterday's "
    "partition from every part the day received (files and Kafka micro-batches).",
)


freshness_checks_job = dg.define_asset_job(
    "freshness_checks",
    selection=dg.AssetSelection.checks(daily_partition_freshness),
    description="Evaluates the daily freshness checks of the eight stages.",
)

freshness_checks_schedule = dg.ScheduleDefinition(
    name="freshness_checks_schedule",
    cron_schedule="5 3 * * *",
    job=freshness_checks_job,
    execution_timezone="UTC",
    description="At 03:05 UTC (past the 03:00 deadline) checks that yesterday's partition of "
    "every stage exists; a miss is a failed `freshness` check on the asset (severity WARN).",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
