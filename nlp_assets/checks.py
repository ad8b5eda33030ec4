"""Health and freshness asset checks (the pandera schema checks live with the stages).

Freshness: Dagster's `build_time_partition_freshness_checks` expects the *last* partition, and
with `end_offset=1` that is today's, still open; our contract is "yesterday's partition by the
deadline", so the check below computes the expected day itself (same metadata keys in spirit:
expected partition, deadline, overdue seconds).

Model health: reads the latest materialisation's metadata (`model_fallback`, `cache_errors`,
`cache_hits`, `cache_misses`, reported by the model stages) and warns when a fallback model
served or the cache failed too often.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from nlp_assets.stages import stage_names
from nlp_assets.stages.common import MODEL_STAGES, PIPELINE

#: Yesterday's partition (UTC) of every pipeline stage is expected by 03:00 UTC (the daily
#: schedules run at 00:30 and 01:00; two hours of slack).
FRESHNESS_DEADLINE_HOUR_UTC = 3
FRESHNESS_CHECK = "freshness"
MODEL_HEALTH_CHECK = "model_health"
#: Share of cache lookups that may fail before the health check warns.
MAX_CACHE_ERROR_RATE = 0.05


def latest_deadline(now: datetime, hour: int = FRESHNESS_DEADLINE_HOUR_UTC) -> datetime:
    """The most recent daily deadline at or before `now` (UTC)."""
    now = now.astimezone(UTC)
    today = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return today if now >= today else today - timedelta(days=1)


def expected_partition(now: datetime, hour: int = FRESHNESS_DEADLINE_HOUR_UTC) -> str:
    """The day partition that must exist by now: the day before the latest deadline."""
    return (latest_deadline(now, hour).date() - timedelta(days=1)).isoformat()


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            FRESHNESS_CHECK,
            asset=stage,
            description=f"Yesterday's partition (UTC) of {stage} exists by "
            f"{FRESHNESS_DEADLINE_HOUR_UTC:02d}:00 UTC.",
        )
        for stage in stage_names(PIPELINE)
    ],
    can_subset=True,
    name="daily_partition_freshness",
)
def daily_partition_freshness(context: dg.AssetCheckExecutionContext):
    now = datetime.now(UTC)
    deadline = latest_deadline(now)
    day = expected_partition(now)
    for check_key in sorted(context.selected_asset_check_keys, key=lambda k: k.to_user_string()):
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=check_key.asset_key, asset_partitions=[day]), limit=1
        ).records
        metadata: dict[str, Any] = {
            "expected_partition": day,
            "deadline": dg.MetadataValue.timestamp(deadline.timestamp()),
        }
        if records:
            metadata["materialised_at"] = dg.MetadataValue.timestamp(records[0].timestamp)
        else:
            metadata["overdue_seconds"] = round(now.timestamp() - deadline.timestamp(), 1)
        yield dg.AssetCheckResult(
            asset_key=check_key.asset_key,
            check_name=FRESHNESS_CHECK,
            passed=bool(records),
            severity=dg.AssetCheckSeverity.WARN,
            metadata=metadata,
        )


@dataclass(frozen=True)
class Health:
    passed: bool
    problems: list[str]
    metadata: dict[str, Any]


def _number(metadata: Mapping[str, Any], key: str) -> float | None:
    value = getattr(metadata.get(key), "value", metadata.get(key))
    return float(value) if isinstance(value, int | float) else None


def model_health(metadata: Mapping[str, Any]) -> Health:
    """Judge a model stage from its materialisation metadata; keys not reported pass."""
    problems = []
    fallback = _number(metadata, "model_fallback")
    if fallback:
        problems.append("a fallback model served this materialisation")
    hits, misses, errors = (
        _number(metadata, key) or 0.0 for key in ("cache_hits", "cache_misses", "cache_errors")
    )
    lookups = hits + misses + errors
    error_rate = errors / lookups if lookups else 0.0
    if error_rate > MAX_CACHE_ERROR_RATE:
        problems.append(
            f"cache error rate {error_rate:.1%} is above {MAX_CACHE_ERROR_RATE:.0%} "
            f"({int(errors)} of {int(lookups)} lookups)"
        )
    reported = [
        key
        for key in ("model_fallback", "cache_hits", "cache_misses", "cache_errors")
        if key in metadata
    ]
    return Health(
        passed=not problems,
        problems=problems,
        metadata={
            "cache_error_rate": round(error_rate, 4),
            "cache_hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            "model_fallback": bool(fallback),
            "reported": ", ".join(reported) or "none of the health keys",
        },
    )


def _model_health_check(stage: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=stage,
        name=MODEL_HEALTH_CHECK,
        description=f"The latest materialisation of {stage} used its configured model (no "
        f"fallback) and at most {MAX_CACHE_ERROR_RATE:.0%} of its cache lookups failed.",
    )
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(stage))
        if event is None or event.asset_materialization is None:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{stage} was never materialised",
            )
        materialisation = event.asset_materialization
        health = model_health(materialisation.metadata)
        metadata = {k: v for k, v in health.metadata.items() if v is not None}
        metadata["partition"] = materialisation.partition or "none"
        return dg.AssetCheckResult(
            passed=health.passed,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(health.problems) or "healthy",
            metadata=metadata,
        )

    return check


model_health_checks = [_model_health_check(stage) for stage in stage_names(MODEL_STAGES)]


all_checks = [daily_partition_freshness, *model_health_checks]
