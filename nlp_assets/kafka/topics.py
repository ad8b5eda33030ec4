"""The Kafka topics the pipeline reads: external assets upstream of raw text.

Dagster does not materialise them; each topic's sensor reports consumer lag on it as an
observation (`consumer_lag`: high watermarks minus the sensor cursor).
"""

from __future__ import annotations

import dagster as dg

from nlp_assets import settings

KAFKA_GROUP = "sources"


def topic_asset_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic])


def topic_spec(topic: str, priority: int = 0) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=topic_asset_key(topic),
        group_name=KAFKA_GROUP,
        kinds={"kafka"},
        description=f"Kafka topic {topic}: JSON messages (id, text, optional source, "
        "timestamp, priority, metadata) consumed by micro-batch runs of the daily pipeline; "
        f"invalid ones go to {topic}.dlq. Run priority {priority}.",
        metadata={"topic": topic, "priority": priority},
    )


topic_specs = [topic_spec(name, priority) for name, priority in settings.kafka_topics()]
