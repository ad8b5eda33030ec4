"""The lake as a Dagster resource, and the IO manager every stage asset is stored through."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from nlp_assets.lake import DAY_PART, Lake

#: Run tag naming the part a micro-batch run covers; runs without it work on whole days.
PART_TAG = "nlp/part"
#: Input metadata asking for the whole day even in a micro-batch run (aggregates, reports).
SCOPE_DAY = {"scope": "day"}

PREVIEW_ROWS = 5
PREVIEW_CHARS = 80


class LakeResource(dg.ConfigurableResource):
    """Root of the Parquet lake: a local folder or an fsspec URL (s3://, gs://, abfs://)."""

    root: str = Field(description="Lake root folder or URL.")

    def lake(self) -> Lake:
        return Lake(self.root)


def run_part(context: dg.InputContext | dg.OutputContext | dg.AssetExecutionContext) -> str:
    """The part the current run writes: its `nlp/part` tag, or the whole day."""
    if isinstance(context, dg.AssetExecutionContext):
        return context.run.tags.get(PART_TAG, DAY_PART)
    try:
        return context.step_context.run_tags.get(PART_TAG, DAY_PART)
    except dg.DagsterInvariantViolationError:  # contexts built in unit tests have no step
        return DAY_PART


def table_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )


def markdown_preview(frame: pl.DataFrame) -> str:
    """The first rows as a markdown table; long and nested values are shortened."""
    head = frame.head(PREVIEW_ROWS)
    if not head.width:
        return "_empty_"
    cells = [[_short(value) for value in row] for row in head.iter_rows()]
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * head.width]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores polars DataFrames as Parquet parts in the lake (see `nlp_assets.lake`).

    Output: the run's part of the partition (whole day by default; always the whole day for an
    asset whose metadata is `SCOPE_DAY`), with row count, column schema and a preview as
    metadata. Input: the run's part, or the whole day when the input
    asks for it with `AssetIn(metadata={"scope": "day"})`; several partitions come back as one
    frame.
    """

    lake: LakeResource

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()} must return a polars DataFrame")
        asset = "/".join(context.asset_key.path)
        # An asset declared with metadata SCOPE_DAY (aggregates, reports) always computes the
        # whole day, so even in a micro-batch run it replaces the day instead of adding a part.
        whole_day = context.definition_metadata.get("scope") == "day"
        part = DAY_PART if whole_day else run_part(context)
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            # A single-run backfill of a range: one whole-day part per day, split by ingest_date.
            path = self.lake.lake().write_days(asset, context.asset_partition_keys, obj)
        else:
            day = context.asset_partition_key if context.has_asset_partitions else None
            path = self.lake.lake().write(asset, day, obj, part)
        context.add_output_metadata(
            {
                "dagster/row_count": obj.height,
                "dagster/column_schema": table_schema(obj),
                "path": dg.MetadataValue.path(str(path)),
                "preview": dg.MetadataValue.md(markdown_preview(obj)),
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        lake = self.lake.lake()
        asset = "/".join(context.asset_key.path)
        if not context.has_asset_partitions:
            return lake.read_part(asset, None)
        whole_day = context.definition_metadata.get("scope") == "day"
        part = DAY_PART if whole_day else run_part(context)
        frames = [
            lake.read_day(asset, day) if part == DAY_PART else lake.read_part(asset, day, part)
            for day in context.asset_partition_keys
        ]
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
