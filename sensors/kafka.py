"""One sensor per Kafka topic: new offsets become bounded micro-batch runs of the daily pipeline.

A tick reads watermarks only (never payloads), plans ranges from its cursor
(`nlp_assets.kernels.messages.plan_ranges`) and emits one RunRequest per range:
run_key `topic:partition:start-end` (end exclusive), today's (UTC) partition, the range in
tags, the topic's priority as `dagster/priority`. Dagster stores the new cursor only after the
runs are submitted, and never starts two runs with the same run_key, so a range is requested
once. When the broker cannot be reached, the tick is skipped and the cursor stays.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from nlp_assets import metrics, settings
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kernels.messages import ResetPolicy, TopicCursor, plan_ranges
from nlp_assets.stages.kafka_topics import topic_asset_key
from resources.kafka import KafkaResource, KafkaUnavailable
from resources.lake import PART_TAG

TRIGGER_TAG = "nlp/trigger"
PRIORITY_TAG = "dagster/priority"


def sensor_name(topic: str) -> str:
    return "kafka_" + "".join(c if c.isalnum() else "_" for c in topic) + "_sensor"


def build_kafka_sensor(
    topic: str,
    *,
    priority: int = 0,
    max_messages_per_run: int | None = None,
    max_runs_per_tick: int | None = None,
    on_reset: ResetPolicy = "restart",
    minimum_interval_seconds: int = 30,
    job: dg.UnresolvedAssetJobDefinition = daily_pipeline_job,
    today=lambda: datetime.now(UTC).date().isoformat(),
) -> dg.SensorDefinition:
    """A sensor for one topic; limits default to the `NLP_KAFKA_*` settings."""
    per_run = max_messages_per_run or settings.kafka_max_messages_per_run()
    per_tick = max_runs_per_tick or settings.kafka_max_runs_per_tick()

    @dg.sensor(
        name=sensor_name(topic),
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Kafka topic {topic}: new offsets become micro-batch runs of today's "
        f"partition, at most {per_run} messages a run and {per_tick} runs a tick (priority "
        f"{priority}). Cursor: the next offset per partition. A recreated topic: "
        f"policy '{on_reset}'.",
    )
    def kafka_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        cursor = TopicCursor.from_json(context.cursor)
        try:
            watermarks = kafka.watermarks(topic)
        except KafkaUnavailable as error:
            return dg.SkipReason(f"broker unreachable, cursor kept: {error}")
        if watermarks is None:
            return dg.SkipReason(f"topic {topic} does not exist (yet); cursor kept")
        plan = plan_ranges(
            topic,
            cursor,
            watermarks,
            max_messages_per_run=per_run,
            max_runs=per_tick,
            on_reset=on_reset,
        )
        for note in plan.notes:
            context.log.warning(note)
        day = today()
        requests = [
            dg.RunRequest(
                run_key=offsets.run_key,
                partition_key=day,
                tags={
                    **offsets.tags(),
                    PART_TAG: offsets.part,
                    TRIGGER_TAG: "kafka",
                    PRIORITY_TAG: str(priority),
                },
            )
            for offsets in plan.ranges
        ]
        observation = dg.AssetObservation(
            asset_key=topic_asset_key(topic),
            metadata={
                "consumer_lag": plan.total_lag,
                "consumer_lag_by_partition": dg.MetadataValue.json(
                    {str(p): lag for p, lag in sorted(plan.lag.items())}
                ),
                "requested_messages": sum(r.size for r in plan.ranges),
                "requested_runs": len(plan.ranges),
                "partitions": len(watermarks),
                "generation": plan.cursor.generation,
            },
        )
        metrics.export_consumer_lag(  # Prometheus: nlp_kafka_consumer_lag{topic}
            topic=topic,
            lag=plan.total_lag,
            asset=topic_asset_key(topic).to_user_string(),
            job=sensor_name(topic),
            warn=context.log.warning,
        )
        if plan.halted:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(plan.halted),
                cursor=context.cursor,
                asset_events=[observation],
            )
        return dg.SensorResult(
            run_requests=requests,
            cursor=plan.cursor.to_json(),
            asset_events=[observation],
            skip_reason=None
            if requests
            else dg.SkipReason(f"no new messages on {topic} (lag {plan.total_lag})"),
        )

    return kafka_sensor


kafka_sensors = [
    build_kafka_sensor(name, priority=priority) for name, priority in settings.kafka_topics()
]
