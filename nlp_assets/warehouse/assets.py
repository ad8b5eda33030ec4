"""Warehouse assets: each mirrors one stage's day (or micro-batch part) into its Postgres table.

They sit in their own group and job (`warehouse_load`), outside `daily_pipeline`: the embedded
default (`make run`) never needs a database. In production the automation sensor keeps them in
step with their stage (eager automation), or add the group to the job your sensors launch.
Without `DATABASE_URL` they log "warehouse not configured" and skip: no failure, no rows.

They read the lake part by part (not through the IO manager, which joins a day's parts into one
frame): a micro-batch run (`nlp/part` tag) loads its own part; a whole-day run replaces the day
with every part the lake holds for it, each row keeping its part, in one transaction.
"""

import time
from collections.abc import Iterator

import dagster as dg

from nlp_assets.lake import DAY_PART, Lake
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.lake import LakeResource, run_part
from nlp_assets.resources.warehouse import NOT_CONFIGURED, WarehouseResource
from nlp_assets.stages.common import RETRY_POLICY
from nlp_assets.warehouse.load import TABLES, TableSpec, ensure_schema, replace_day, replace_part

GROUP = "warehouse"


def _load(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    lake: Lake,
    spec: TableSpec,
) -> Iterator[dg.MaterializeResult]:
    if not warehouse.configured:
        context.log.warning(NOT_CONFIGURED)
        return
    started = time.perf_counter()
    days = context.partition_keys  # one day, or several in a single-run backfill
    part = DAY_PART if spec.whole_day or len(days) > 1 else run_part(context)
    rows = 0
    conn = warehouse.connect()
    try:
        ensure_schema(conn, warehouse.schema_name)
        for day in days:  # one transaction per day (or part)
            common = {"day": day, "run_id": context.run.run_id, "schema": warehouse.schema_name}
            if part == DAY_PART:
                frames = lake.read_parts(spec.asset, day)  # one generation of the day
                if not frames:
                    raise dg.Failure(
                        f"{spec.asset} has no data for {day} in the lake: materialise it first",
                        allow_retries=False,
                    )
                rows += replace_day(conn, spec, frames, **common)
            else:
                frame = lake.read_part(spec.asset, day, part)
                rows += replace_part(conn, spec, frame, part=part, **common)
    finally:
        conn.close()
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "table": f"{warehouse.schema_name}.{spec.name}",
            "view": f"{warehouse.schema_name}.v_{spec.name}",
            "part": part,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


def warehouse_asset(spec: TableSpec, *, description: str) -> dg.AssetsDefinition:
    """The asset `warehouse_<table>` that loads `spec`'s stage into its Postgres table."""

    @dg.asset(
        name=f"warehouse_{spec.name}",
        group_name=GROUP,
        kinds={"postgres"},
        description=description,
        partitions_def=daily_partitions,
        deps=[spec.asset],
        output_required=False,
        retry_policy=RETRY_POLICY,
        automation_condition=dg.AutomationCondition.eager(),
    )
    def load(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult]:
        yield from _load(context, warehouse, lake.lake(), spec)

    return load


warehouse_documents = warehouse_asset(
    TABLES["documents"],
    description="cleaned_text rows in Postgres table documents (view v_documents), replaced "
    "per day or micro-batch part in one transaction.",
)
warehouse_predictions = warehouse_asset(
    TABLES["predictions"],
    description="predictions rows in Postgres table predictions (view v_predictions; entities "
    "as jsonb), replaced per day or micro-batch part in one transaction.",
)
warehouse_aggregates = warehouse_asset(
    TABLES["aggregates"],
    description="The day's aggregates in Postgres table aggregates (view v_aggregates), "
    "replaced for the whole day in one transaction.",
)

warehouse_assets = [warehouse_documents, warehouse_predictions, warehouse_aggregates]
