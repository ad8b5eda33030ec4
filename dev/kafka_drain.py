"""Drive a Kafka sensor and its runs in one process, as the daemon would (tests, the streaming
benchmark, a laptop without `dagster dev`).

Each tick evaluates the sensor with `build_sensor_context` on the given instance and cursor;
each RunRequest whose run_key this sensor already launched is skipped (Dagster's run_key
de-duplication), every other one is materialised with the request's tags and partition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

Runner = Callable[[dg.RunRequest, dict[str, str]], bool]


@dataclass
class TickOutcome:
    cursor: str | None
    requests: list[dg.RunRequest]
    skip_reason: str | None
    observations: list[dg.AssetObservation]
    launched: list[str] = field(default_factory=list)  # run keys
    deduplicated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def evaluate_tick(
    sensor: dg.SensorDefinition,
    *,
    instance: dg.DagsterInstance,
    cursor: str | None,
    definitions: dg.Definitions,
) -> TickOutcome:
    """`definitions` holds the sensor's job (partitioned requests are resolved against it) and
    the resources."""
    resources = definitions.resources or {}
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=definitions,
        resources={key: resources[key] for key in sensor.required_resource_keys},
        sensor_name=sensor.name,
    ) as context:
        data = sensor.evaluate_tick(context)
    return TickOutcome(
        # a tick that only skips keeps the cursor (Dagster stores no update)
        cursor=data.cursor if data.cursor is not None else cursor,
        requests=list(data.run_requests or []),
        skip_reason=data.skip_message,
        observations=[e for e in data.asset_events if isinstance(e, dg.AssetObservation)],
    )


def already_launched(instance: dg.DagsterInstance, sensor_name: str, run_key: str) -> bool:
    runs = instance.get_run_records(
        filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: sensor_name}),
        limit=1,
    )
    return bool(runs)


def materialize_runner(
    assets: Sequence[Any],
    selection: dg.AssetSelection,
    *,
    instance: dg.DagsterInstance,
    resources: Mapping[str, Any],
) -> Runner:
    """Runs a request as `dg.materialize` of the job's selection, or of the request's own
    `asset_selection` within it; returns success."""

    def run(request: dg.RunRequest, tags: dict[str, str]) -> bool:
        chosen = selection
        if request.asset_selection is not None:
            subset: dg.AssetSelection = dg.AssetSelection.assets(*request.asset_selection)
            if request.asset_check_keys is not None:
                subset = subset.without_checks() | dg.AssetSelection.checks(
                    *request.asset_check_keys
                )
            chosen = selection & subset
        result = dg.materialize(
            assets,
            selection=chosen,
            partition_key=request.partition_key,
            instance=instance,
            resources=dict(resources),
            tags=tags,
            raise_on_error=False,
        )
        return result.success

    return run


def tick_and_run(
    sensor: dg.SensorDefinition,
    *,
    instance: dg.DagsterInstance,
    cursor: str | None,
    definitions: dg.Definitions,
    runner: Runner,
) -> TickOutcome:
    """One tick, then its runs one after another (one run per day at a time, as dagster.yaml
    limits); a failed run is reported, not retried (the caller plays Dagster's run retry).
    The sensor finds the failed run in the instance at a later tick and requests its range
    again after the backoff (a new run key, `...:a2`), as under the daemon."""
    outcome = evaluate_tick(sensor, instance=instance, cursor=cursor, definitions=definitions)
    for request in outcome.requests:
        key = request.run_key or ""
        if key and already_launched(instance, sensor.name, key):
            outcome.deduplicated.append(key)
            continue
        tags = {**request.tags, RUN_KEY_TAG: key, SENSOR_NAME_TAG: sensor.name}
        outcome.launched.append(key)
        if not runner(request, tags):
            outcome.failed.append(key)
    return outcome
