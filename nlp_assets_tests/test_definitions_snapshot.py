"""Every asset, check, job, schedule, sensor and resource of the code location, as one snapshot.

A change to the graph (a key, a dependency, a group, an owner, a check, a job's selection, a
cron) fails here until the snapshot is updated on purpose:
`.venv/bin/pytest nlp_assets_tests/test_definitions_snapshot.py --snapshot-update`, then review
the diff of `__snapshots__/test_definitions_snapshot.ambr` like any other change.

Code versions are hashes of source files, so the snapshot records only that a stage has one;
`test_conventions.py` proves what changes them. A lake table's URI is recorded under the lake
root (`<lake>/...`), and its columns as `name type [constraints]` (the descriptions are
checked in `test_definitions_catalog.py`, not frozen here).
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from nlp_assets import settings
from nlp_assets.definitions import defs
from nlp_assets.lake import Lake


@pytest.fixture(scope="module")
def repository() -> dg.RepositoryDefinition:
    return defs.get_repository_def()


def _column(column: dg.TableColumn) -> str:
    constraints = column.constraints
    flags = [
        *([] if constraints.nullable else ["not null"]),
        *(["unique"] if constraints.unique else []),
        *constraints.other,
    ]
    return f"{column.name} {column.type}" + (f" [{'; '.join(flags)}]" if flags else "")


def _table(metadata: Any) -> dict[str, Any] | None:
    """Table name, URI (under `<lake>`), storage kind and columns of a lake table."""
    if "dagster/table_name" not in metadata:
        return None
    root = Lake(settings.lake_dir()).table_uri("")
    schema = metadata.get("dagster/column_schema")
    return {
        "name": metadata["dagster/table_name"],
        "uri": metadata["dagster/uri"].replace(root, "<lake>"),
        "storage_kind": metadata["dagster/storage_kind"],
        "quarantine_uri": (
            str(metadata["quarantine_uri"].value).replace(root, "<lake>")
            if "quarantine_uri" in metadata
            else None
        ),
        "columns": [_column(c) for c in schema.columns] if schema is not None else None,
        "table_constraints": list(schema.constraints.other) if schema is not None else None,
    }


def _asset(spec: dg.AssetSpec, graph: Any) -> dict[str, Any]:
    node = graph.get(spec.key)
    partitions = node.partitions_def
    return {
        "group": spec.group_name,
        "deps": sorted(key.to_user_string() for key in node.parent_keys),
        "kinds": sorted(spec.kinds),
        "owners": list(spec.owners),
        "tags": {k: v for k, v in spec.tags.items() if not k.startswith("dagster/kind/")},
        "partitions": type(partitions).__name__ if partitions else None,
        "materializable": node.is_materializable,
        "has_code_version": spec.code_version is not None,
        "checks": {
            graph.get_check_spec(key).name: (
                "blocking" if graph.get_check_spec(key).blocking else "warn"
            )
            for key in sorted(node.check_keys, key=lambda k: k.name)
        },
        "table": _table(spec.metadata),
    }


def test_every_definition_matches_the_snapshot(repository, snapshot) -> None:
    graph = defs.resolve_asset_graph()
    assets = {
        spec.key.to_user_string(): _asset(spec, graph)
        for assets_def in graph.assets_defs
        for spec in assets_def.specs
    }
    jobs = {}
    for job in defs.jobs or []:
        resolved = defs.resolve_job_def(job.name)
        selection = getattr(job, "selection", None)  # op jobs (lake maintenance) have none
        jobs[job.name] = {
            "assets": (
                sorted(k.to_user_string() for k in selection.resolve(graph))
                if selection is not None
                else None
            ),
            "ops": sorted(resolved.graph.node_dict) if selection is None else None,
            "partitioned": resolved.partitions_def is not None,
            "max_partitions_per_run": (
                resolved.backfill_policy.max_partitions_per_run
                if resolved.backfill_policy
                else None
            ),
            "tags": dict(resolved.tags),
        }
    schedules = {
        schedule.name: {
            "cron": schedule.cron_schedule,
            "timezone": schedule.execution_timezone,
            "job": schedule.job_name,
            "default_status": schedule.default_status.value,
        }
        for schedule in repository.schedule_defs
    }
    sensors = {
        sensor.name: {
            "type": type(sensor).__name__,
            "jobs": sorted(t.job_name for t in sensor.targets),
            "interval_s": sensor.minimum_interval_seconds,
            "default_status": sensor.default_status.value,
            "resources": sorted(sensor.required_resource_keys),
        }
        for sensor in repository.sensor_defs
    }
    resources = {
        key: type(resource).__name__ for key, resource in sorted((defs.resources or {}).items())
    }
    assert {
        "assets": dict(sorted(assets.items())),
        "jobs": dict(sorted(jobs.items())),
        "schedules": dict(sorted(schedules.items())),
        "sensors": dict(sorted(sensors.items())),
        "resources": resources,
    } == snapshot
