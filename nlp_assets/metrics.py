"""Prometheus metrics of stage materialisations and sensors (no Dagster import).

Runs are batch jobs, so nothing is scraped from them: each materialisation fills a fresh
`CollectorRegistry` and either pushes it to a Pushgateway (`PROMETHEUS_PUSHGATEWAY` set; one
group per job and asset, replaced by the next push of the same group) or writes it in the
node-exporter textfile format (`NLP_METRICS_TEXTFILE_DIR`, default `$NLP_DATA_DIR/metrics`), one
file per group. The partition is a label of the series, not part of the group: each group holds
the latest materialisation's values only, so the series are bounded by jobs x assets x metrics
however many days run (nothing is ever left behind for a superseded partition; Prometheus keeps
the history it scraped). Exporting is best effort: `export_*` never raise, they log a warning, so a
metrics outage never fails a run.

Every series carries `job`, `asset` (from the Pushgateway's grouping key or as labels in the
textfile) and `partition` (a label) and `device` where the stage reported one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, pushadd_to_gateway
from prometheus_client.exposition import write_to_textfile

from nlp_assets import settings

log = logging.getLogger(__name__)

PUSHGATEWAY_ENV = "PROMETHEUS_PUSHGATEWAY"
TEXTFILE_DIR_ENV = "NLP_METRICS_TEXTFILE_DIR"
PUSH_TIMEOUT_SECONDS = 5.0

#: Numeric stage metadata (the contract between stages) -> (metric, help, scale to base unit).
STAGE_METRICS: dict[str, tuple[str, str, float]] = {
    "docs_in": ("nlp_stage_docs_in", "Documents the stage read.", 1.0),
    "rows_out": ("nlp_stage_docs_out", "Rows the stage wrote.", 1.0),
    "quarantined": ("nlp_stage_docs_quarantined", "Rows refused into quarantine.", 1.0),
    "seconds": ("nlp_stage_duration_seconds", "Wall time of the stage.", 1.0),
    "model_seconds": ("nlp_stage_model_seconds", "Time spent in model inference.", 1.0),
    "tokens_per_second": ("nlp_stage_tokens_per_second", "Model throughput.", 1.0),
    "batch_latency_ms": (
        "nlp_stage_batch_latency_seconds",
        "Median latency of one model batch.",
        0.001,
    ),
    "cache_hits": ("nlp_stage_cache_hits", "Model results served from the cache.", 1.0),
    "cache_misses": ("nlp_stage_cache_misses", "Model results computed (not cached).", 1.0),
    "cache_errors": ("nlp_stage_cache_errors", "Cache reads or writes that failed.", 1.0),
    "cache_invalid": (
        "nlp_stage_cache_invalid",
        "Cached model results that failed validation (recomputed).",
        1.0,
    ),
    "model_fallback": ("nlp_stage_model_fallback", "1 when a fallback model served.", 1.0),
    "dlq_messages": ("nlp_stage_dlq_messages", "Messages sent to the dead-letter topic.", 1.0),
}
LAST_SUCCESS = "nlp_stage_last_success_timestamp_seconds"
PARTITION_START = "nlp_stage_partition_start_timestamp_seconds"
MODEL_INFO = "nlp_stage_model_info"
FAILED = "nlp_stage_failed"
LAST_FAILURE = "nlp_stage_last_failure_timestamp_seconds"
CONSUMER_LAG = "nlp_kafka_consumer_lag"
FAILED_RANGES = "nlp_kafka_failed_ranges"
#: String metadata naming a model (`name@version`): exported as an info series.
MODEL_KEY = re.compile(r"^(model|.+_model)$")

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def exported_metric_names() -> set[str]:
    """Every metric name this module can export (rules and dashboards may use only these)."""
    stage = {metric for metric, _, _ in STAGE_METRICS.values()}
    return stage | {
        LAST_SUCCESS,
        PARTITION_START,
        MODEL_INFO,
        FAILED,
        LAST_FAILURE,
        CONSUMER_LAG,
        FAILED_RANGES,
    }


def textfile_dir() -> Path:
    return settings.metrics_textfile_dir()


def _number(value: Any) -> float | None:
    """The float of a metadata value (plain number or Dagster's IntMetadataValue etc.)."""
    value = getattr(value, "value", value)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _partition_start(partition: str) -> float | None:
    try:
        day = date.fromisoformat(partition)
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


class _Group:
    """One push: a registry and the labels of its group (job, asset; partition as a label)."""

    def __init__(self, job: str, asset: str, partition: str, pushed: bool, **extra: str):
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self.grouping = {"asset": asset}
        self.job = job
        # A Pushgateway adds job and the grouping key to every series; a textfile must carry them.
        # the partition is a label, not part of the group: a group keeps its latest push only
        base = {"job": job, **self.grouping} if not pushed else {}
        base["partition"] = partition
        self.labels = {**base, **{k: v for k, v in extra.items() if v}}

    def gauge(self, name: str, help_text: str, value: float, **more: str) -> None:
        """Set one sample; samples of one name (model info of two models) share a gauge."""
        labels = {**self.labels, **more}
        if name not in self._gauges:
            self._gauges[name] = Gauge(name, help_text, sorted(labels), registry=self.registry)
        gauge = self._gauges[name]
        (gauge.labels(**labels) if labels else gauge).set(value)


def stage_samples(
    metadata: Mapping[str, Any], rows_out: int, *, now: float, partition: str
) -> list[tuple[str, str, float, dict[str, str]]]:
    """(metric, help, value, extra labels) for one stage materialisation's metadata."""
    values = dict(metadata) | {"rows_out": rows_out}
    samples: list[tuple[str, str, float, dict[str, str]]] = []
    for key, (metric, help_text, scale) in STAGE_METRICS.items():
        number = _number(values.get(key))
        if number is not None:
            samples.append((metric, help_text, number * scale, {}))
    samples.append((LAST_SUCCESS, "When the stage last succeeded.", now, {}))
    start = _partition_start(partition)
    if start is not None:
        samples.append((PARTITION_START, "Start of the materialised day partition.", start, {}))
    for key, value in sorted(values.items()):
        value = getattr(value, "value", value)
        if MODEL_KEY.match(key) and isinstance(value, str):
            samples.append(
                (MODEL_INFO, "Model that served the stage.", 1.0, {"role": key, "model": value})
            )
    return samples


def _export(group: _Group, *, replace: bool, file_suffix: str = "") -> str:
    """Push the group or write its textfile; returns where it went."""
    gateway = settings.pushgateway_url()
    if gateway:
        push = push_to_gateway if replace else pushadd_to_gateway
        push(
            gateway,
            job=group.job,
            registry=group.registry,
            grouping_key=group.grouping,
            timeout=PUSH_TIMEOUT_SECONDS,
        )
        return gateway
    folder = textfile_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = textfile_name(group.job, **group.grouping)
    path = folder / f"{name}{file_suffix}.prom"
    write_to_textfile(str(path), group.registry)
    for old in folder.glob(f"{name}__*.prom"):  # a file per partition, as before: superseded
        old.unlink(missing_ok=True)
    return str(path)


def job_of(context: Any) -> str:
    """The run's job name; "direct" for a stage invoked outside a run (unit tests)."""
    try:
        return context.run.job_name
    except Exception:
        return "direct"


def textfile_name(job: str, asset: str) -> str:
    return "__".join(_SAFE.sub("_", part) for part in (job, asset))


def export_stage_metrics(
    *,
    job: str,
    asset: str,
    partition: str | None,
    metadata: Mapping[str, Any],
    rows_out: int,
    now: float | None = None,
    warn: Callable[[str], Any] = log.warning,
) -> str | None:
    """Export one stage materialisation; returns where it went, None when it failed.

    Replaces the group's previous push, whatever its partition (and clears a failure recorded
    for it).
    """
    try:
        partition = partition or "none"
        device = getattr(metadata.get("device"), "value", metadata.get("device"))
        pushed = bool(settings.pushgateway_url())
        group = _Group(
            job, asset, partition, pushed, device=device if isinstance(device, str) else ""
        )
        stamp = datetime.now(UTC).timestamp() if now is None else now
        for metric, help_text, value, labels in stage_samples(
            metadata, rows_out, now=stamp, partition=partition
        ):
            group.gauge(metric, help_text, value, **labels)
        where = _export(group, replace=True)
        if not pushed:
            (textfile_dir() / f"{textfile_name(job, asset)}.failed.prom").unlink(missing_ok=True)
        return where
    except Exception as error:  # best effort: metrics never fail a run
        warn(f"metrics of {asset}/{partition} not exported ({type(error).__name__}: {error})")
        return None


def export_stage_failure(
    *, job: str, assets: list[str], partition: str | None, now: float | None = None
) -> list[str]:
    """Record that a run failed in these assets (cleared by the next success of each)."""
    where = []
    stamp = datetime.now(UTC).timestamp() if now is None else now
    pushed = bool(settings.pushgateway_url())
    for asset in assets:
        try:
            group = _Group(job, asset, partition or "none", pushed)
            group.gauge(FAILED, "1 when the last run of the stage failed.", 1.0)
            group.gauge(LAST_FAILURE, "When the stage last failed.", stamp)
            where.append(_export(group, replace=False, file_suffix=".failed"))
        except Exception as error:
            log.warning("failure metric of %s not exported: %s", asset, error)
    return where


def export_consumer_lag(
    *,
    topic: str,
    lag: int,
    asset: str,
    job: str = "kafka_sensor",
    warn: Callable[[str], Any] = log.warning,
    failed_ranges: int = 0,
) -> str | None:
    """Consumer lag of a Kafka topic as a sensor tick observed it (label `topic`): messages not
    yet requested plus those of ranges whose runs failed; and how many such ranges."""
    try:
        pushed = bool(settings.pushgateway_url())
        group = _Group(job, asset, "none", pushed)
        group.gauge(CONSUMER_LAG, "Messages behind the end of the topic.", float(lag), topic=topic)
        group.gauge(
            FAILED_RANGES,
            "Offset ranges whose runs failed and have not succeeded since.",
            float(failed_ranges),
            topic=topic,
        )
        return _export(group, replace=True)
    except Exception as error:  # best effort: metrics never fail a tick
        warn(f"consumer lag of {topic} not exported ({type(error).__name__}: {error})")
        return None
