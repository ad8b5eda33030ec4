import time
from datetime import date

import dagster as dg
import polars as pl

from nlp_assets import tracing
from nlp_assets.kafka import topics as kafka_topics
from nlp_assets.kafka.messages import OffsetRange
from nlp_assets.kafka.raw import read_kafka_range
from nlp_assets.kafka.resource import KafkaResource
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.resources.folders import DayFolder
from nlp_assets.resources.lake import LakeResource
from nlp_assets.schemas import raw_text_schema
from nlp_assets.stages.common import stage_asset, stage_result


def with_run_trace(docs: pl.DataFrame) -> pl.DataFrame:
    """Documents that came without a trace context join the trace of the step reading them."""
    traceparent = tracing.current_traceparent()
    if traceparent is None or docs.is_empty():
        return docs
    return docs.with_columns(pl.col("traceparent").fill_null(traceparent))


@stage_asset(
    "raw_text",
    group="ingest",
    kinds={"polars", "parquet"},
    description="Documents landed for the day (JSONL, CSV, Parquet, TXT under "
    "<landing>/<day>/) with stable doc_ids; unparseable files and records are quarantined. "
    "A Kafka micro-batch run reads exactly its offset range instead (docs/kafka.md).",
    scope="part",
    quarantine=True,
    deps=[spec.key for spec in kafka_topics.topic_specs],
)
def raw_text(
    context: dg.AssetExecutionContext,
    landing: DayFolder,
    lake: LakeResource,
    kafka: KafkaResource,
):
    started = time.perf_counter()
    offsets = OffsetRange.from_tags(context.run.tags)
    if offsets is not None:  # a micro-batch: this range only, landed first, then parsed
        batch = read_kafka_range(context, offsets, kafka=kafka, landing=landing, lake=lake)
        return stage_result(
            context,
            with_run_trace(batch.docs),
            raw_text_schema(),
            started=started,
            lake=lake,
            quarantine=batch.quarantine,
            metadata=batch.metadata,
        )
    result = read_landing_day(landing.path, date.fromisoformat(context.partition_key))
    docs = with_run_trace(result.docs)
    return stage_result(
        context,
        docs,
        raw_text_schema(),
        started=started,
        lake=lake,
        quarantine=result.quarantine,
        metadata={
            "files_read": result.files_read,
            "landing_dir": dg.MetadataValue.path(str(landing.day_dir(context.partition_key))),
            "sources": dg.MetadataValue.json(
                dict(docs.group_by("source").len().sort("source").iter_rows())
            ),
        },
    )
