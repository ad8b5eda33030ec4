"""Which engine a stage runs on: the stage's run config asks, the run's shape decides.

`engine: spark` sends a whole-day (or range) run of a big enough input to Spark; micro-batch
runs (a part of a day) and small inputs stay in-process, where Spark's start-up and
scheduling would cost more than they save.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import dagster as dg
from pydantic import Field

from nlp_assets.engines import LOCAL, SPARK
from nlp_assets.lake import DAY_PART
from nlp_assets.resources.lake import run_part

if TYPE_CHECKING:
    from nlp_assets.resources.spark import SparkResource

T = TypeVar("T")

#: Below this many input documents the Spark engine hands the work back to the local one.
SPARK_MIN_DOCS = 5_000


class EngineConfig(dg.Config):
    engine: Literal["local", "spark"] = Field(
        default=LOCAL,
        description="'local': in-process polars. 'spark': the same kernels on the `spark` "
        "resource's cluster, for whole days or ranges of at least `spark_min_docs` documents.",
    )
    spark_min_docs: int = Field(
        default=SPARK_MIN_DOCS,
        description="Smaller inputs run locally even when engine is 'spark'.",
    )


def choose_engine(context: dg.AssetExecutionContext, config: EngineConfig, n_docs: int) -> str:
    """The engine this step runs on, logged with the reason when Spark was asked for."""
    if config.engine != SPARK:
        return LOCAL
    if run_part(context) != DAY_PART:
        context.log.info("engine spark asked for, but a micro-batch part runs in-process")
        return LOCAL
    if n_docs < config.spark_min_docs:
        context.log.info(
            f"engine spark asked for, but {n_docs} documents < spark_min_docs="
            f"{config.spark_min_docs}: running in-process"
        )
        return LOCAL
    return SPARK


def run_on_spark(
    spark: SparkResource, kernel: Callable[..., T], *args: Any, **kwargs: Any
) -> tuple[T, dict[str, Any]]:
    """`kernel(session, *args, metadata=..., **kwargs)` on the `spark` resource's session; its
    result and the step's engine metadata (engine, master, and what the batches reported)."""
    metadata: dict[str, Any] = {"engine": SPARK, "spark_master": spark.master}
    return kernel(spark.spark_session, *args, metadata=metadata, **kwargs), metadata


def run_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days this step covers: one, or a range in a single-run backfill."""
    return [date.fromisoformat(key) for key in context.partition_keys]
