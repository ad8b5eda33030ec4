import dagster as dg

from nlp_assets.jobs import daily_pipeline_job

#: After the UTC day has closed, recompute it whole: late files are in and the report is final.
daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    daily_pipeline_job,
    hour_of_day=1,
    minute_of_hour=0,
    description="Materialises yesterday's partition (all seven stages) at 01:00 UTC.",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
