import functools
import time
from typing import Any

import dagster as dg
import polars as pl

from nlp_assets.engines import SPARK, workers
from nlp_assets.engines.sink import Committed
from nlp_assets.engines.switch import EngineConfig, choose_engine
from nlp_assets.engines.workers import model_config
from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.resources.lake import LakeResource
from nlp_assets.resources.models import ModelResource
from nlp_assets.resources.spark import SparkResource
from nlp_assets.schemas import tokens_schema
from nlp_assets.stages.common import lake_sink, stage_asset, stage_result


def _summary(config: dict[str, Any], frame: pl.DataFrame) -> dict[str, Any]:
    """The stage's counts of some of its rows (added up over the files the executors write;
    the embedder, for its window count, is the worker's own)."""
    embedder = workers.embedder(config)
    return {
        "windows_total": sum(map(embedder.n_windows, frame["token_ids"].list.len())),
        "truncated": int(frame["truncated"].sum()),
        "tokens_total": int(frame["n_tokens"].sum()),
    }


def _check(_frame: pl.DataFrame):
    return tokens_schema()


@stage_asset(
    "tokens",
    group="preprocess",
    kinds={"huggingface", "parquet"},
    description="Token ids from the embedding model's fast tokenizer, cut to what its windows "
    "read (max_windows windows of max_length tokens); n_tokens counts the whole text and "
    "`truncated` flags the cut.",
    scope="part",
    engines=True,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def tokens(
    context: dg.AssetExecutionContext,
    config: EngineConfig,
    models: ModelResource,
    spark: SparkResource,
    lake: LakeResource,
    cleaned_text: pl.DataFrame,
):
    started = time.perf_counter()
    embedder = models.embedder
    engine = choose_engine(context, config, cleaned_text.height)
    on_spark: dict = {}  # the Spark batches' report: model loads per executor worker
    config_values = model_config(models)
    if engine == SPARK:  # the executors write the rows into the lake, the driver commits
        from nlp_assets.engines.spark import tokenize_on_spark

        sink = lake_sink(context, lake, _check, functools.partial(_summary, config_values))
        committed = tokenize_on_spark(
            spark.spark_session, cleaned_text, config_values, metadata=on_spark, sink=sink
        )
        assert not isinstance(committed, pl.DataFrame)
        value: pl.DataFrame | Committed = committed
        summary = committed.summary
    else:  # one tokenizer call per chunk: a range of days is one frame like one day
        frame = tokenize_documents(cleaned_text, embedder.tokenizer, embedder.read_length)
        value = frame
        summary = {
            "windows_total": sum(map(embedder.n_windows, frame["token_ids"].list.len())),
            "truncated": int(frame["truncated"].sum()),
            "tokens_total": int(frame["n_tokens"].sum()),
        }
    return stage_result(
        context,
        value,
        tokens_schema(),
        started=started,
        metadata={
            "engine": engine,
            "tokenizer": embedder.name,
            "max_length": embedder.max_length,
            "max_windows": embedder.max_windows,
            "read_length": embedder.read_length,
            "windows_total": int(summary.get("windows_total", 0)),
            "truncated": int(summary.get("truncated", 0)),
            "tokens_total": int(summary.get("tokens_total", 0)),
            **on_spark,
        },
    )
