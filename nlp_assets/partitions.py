"""Every stage is partitioned by ingestion day (UTC); today's partition exists for micro-batches."""

import dagster as dg

from nlp_assets.settings import partitions_start

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=partitions_start(), timezone="UTC", end_offset=1
)
