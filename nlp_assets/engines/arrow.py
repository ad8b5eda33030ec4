"""Polars frames <-> the Arrow types Spark accepts (no Dagster, no Spark import at module level).

Spark's Arrow bridge takes `string`, `list` and signed integers; polars writes `large_string`,
`large_list`, fixed-size arrays (embeddings) and unsigned ints (token ids). A kernel's output is
cast to the Spark-friendly form before it leaves a Python worker, and cast back to the stage's
polars schema when it reaches the driver, so values stay bit-identical across the trip.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
import pyarrow as pa


def spark_arrow_type(dtype: pa.DataType) -> pa.DataType:
    """The Arrow type Spark reads for `dtype` (recursively through lists and structs)."""
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype):
        return pa.binary()
    if (
        pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
        or pa.types.is_list_view(dtype)
        or pa.types.is_list(dtype)
    ):
        return pa.list_(spark_arrow_type(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct(
            [pa.field(f.name, spark_arrow_type(f.type), f.nullable) for f in dtype.fields]
        )
    if pa.types.is_uint8(dtype):
        return pa.int16()
    if pa.types.is_uint16(dtype):
        return pa.int32()
    if pa.types.is_uint32(dtype) or pa.types.is_uint64(dtype):
        return pa.int64()
    return dtype


def spark_arrow_schema(schema: Mapping[str, pl.DataType]) -> pa.Schema:
    empty = pl.DataFrame(schema=dict(schema)).to_arrow(compat_level=pl.CompatLevel.oldest())
    return pa.schema([pa.field(f.name, spark_arrow_type(f.type)) for f in empty.schema])


def spark_schema(schema: Mapping[str, pl.DataType]):
    """The Spark StructType of a polars schema (for `mapInArrow`)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(spark_arrow_schema(schema))


def to_spark_arrow(
    frame: pl.DataFrame, schema: Mapping[str, pl.DataType] | None = None
) -> pa.Table:
    """A polars frame as an Arrow table Spark accepts (optionally in `schema`'s column order)."""
    schema = dict(schema or frame.schema)
    table = frame.select(list(schema)).cast(schema).to_arrow(compat_level=pl.CompatLevel.oldest())  # type: ignore[arg-type]
    return table.cast(spark_arrow_schema(schema))


def to_batches(frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> list[pa.RecordBatch]:
    table = to_spark_arrow(frame, schema)
    return table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]


def from_spark_arrow(
    table: pa.Table | pa.RecordBatch, schema: Mapping[str, pl.DataType]
) -> pl.DataFrame:
    """Back to the stage's polars schema (embedding lists become fixed-size arrays again)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if not frame.width:
        return pl.DataFrame(schema=dict(schema))
    return frame.select(list(schema)).cast(dict(schema))  # type: ignore[arg-type]
