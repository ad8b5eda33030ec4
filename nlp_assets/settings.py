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


# Landing-file ingest caps (nlp_assets/kernels/ingest.py), checked before anything is parsed.
def ingest_max_file_bytes() -> int:
    """`NLP_INGEST_MAX_FILE_BYTES`: a larger landing file is one quarantine row (256 MiB)."""
    return int(os.getenv("NLP_INGEST_MAX_FILE_BYTES", str(256 * 1024 * 1024)))


def ingest_max_record_bytes() -> int:
    """`NLP_INGEST_MAX_RECORD_BYTES`: the most a JSONL line, CSV row, Parquet cell or TXT file
    may hold (4 MiB); a larger one is quarantined, its raw bytes cut to this."""
    return int(os.getenv("NLP_INGEST_MAX_RECORD_BYTES", str(4 * 1024 * 1024)))


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


def kafka_sensor_interval_seconds() -> int:
    """`NLP_KAFKA_SENSOR_INTERVAL_SECONDS`: the least time between two ticks of a topic sensor."""
    return int(os.getenv("NLP_KAFKA_SENSOR_INTERVAL_SECONDS", "30"))


def kafka_max_message_bytes() -> int:
    return int(os.getenv("NLP_KAFKA_MAX_MESSAGE_BYTES", str(64 * 1024)))


def kafka_range_max_attempts() -> int:
    """Requests of a range whose runs fail before one more in dead-letter mode."""
    return int(os.getenv("NLP_KAFKA_RANGE_MAX_ATTEMPTS", "3"))


def kafka_range_retry_backoff_seconds() -> float:
    """Wait after a range's first failure before its next request (doubles each attempt)."""
    return float(os.getenv("NLP_KAFKA_RANGE_RETRY_BACKOFF_SECONDS", "60"))


def kafka_max_outstanding_ranges() -> int:
    """Ranges requested and not yet succeeded a sensor keeps track of; no new ones past it."""
    return int(os.getenv("NLP_KAFKA_MAX_OUTSTANDING_RANGES", "100"))
