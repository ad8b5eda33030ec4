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
