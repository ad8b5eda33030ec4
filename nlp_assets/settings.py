"""Where things live, from environment variables (none is a secret; each has a default)."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    return Path(os.getenv("NLP_DATA_DIR", "data")).resolve()


def landing_dir() -> str:
    return os.getenv("NLP_LANDING_DIR", str(data_dir() / "landing"))


def lake_dir() -> str:
    return os.getenv("NLP_LAKE_DIR", str(data_dir() / "lake"))


def reports_dir() -> str:
    return os.getenv("NLP_REPORTS_DIR", str(data_dir() / "reports"))


def labelled_sentiment_path() -> str:
    return os.getenv("NLP_LABELLED_SENTIMENT", str(data_dir() / "labelled" / "sentiment.parquet"))


def partitions_start() -> str:
    return os.getenv("NLP_PARTITIONS_START", "2026-01-01")


# Kafka (README "Kafka"): connection settings are read by `resources.kafka.kafka_from_env`;
# topics, batching and the message size limit here.
def kafka_topics() -> list[tuple[str, int]]:
    """`NLP_KAFKA_TOPICS`: comma-separated `topic[:priority]` (one sensor per topic)."""
    topics = []
    for item in os.getenv("NLP_KAFKA_TOPICS", "nlp-documents").split(","):
        name, _, priority = item.strip().partition(":")
        if name:
            topics.append((name, int(priority or 0)))
    return topics


def kafka_max_messages_per_run() -> int:
    return int(os.getenv("NLP_KAFKA_MAX_MESSAGES_PER_RUN", "5000"))


def kafka_max_runs_per_tick() -> int:
    return int(os.getenv("NLP_KAFKA_MAX_RUNS_PER_TICK", "10"))


def kafka_max_message_bytes() -> int:
    return int(os.getenv("NLP_KAFKA_MAX_MESSAGE_BYTES", str(64 * 1024)))
