import time

import dagster as dg
import polars as pl

from nlp_assets.engines import SPARK
from nlp_assets.engines.switch import EngineConfig, choose_engine
from nlp_assets.engines.workers import model_config
from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.resources.models import ModelResource
from nlp_assets.resources.spark import SparkResource
from nlp_assets.schemas import tokens_schema
from nlp_assets.stages.common import stage_asset, stage_result


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
    cleaned_text: pl.DataFrame,
):
    started = time.perf_counter()
    embedder = models.embedder
    engine = choose_engine(context, config, cleaned_text.height)
    on_spark: dict = {}  # the Spark batches' report: model loads per executor worker
    if engine == SPARK:
        from nlp_assets.engines.spark import tokenize_on_spark

        frame = tokenize_on_spark(
            spark.spark_session, cleaned_text, model_config(models), metadata=on_spark
        )
    else:  # one tokenizer call per chunk: a range of days is one frame like one day
        frame = tokenize_documents(cleaned_text, embedder.tokenizer, embedder.read_length)
    return stage_result(
        context,
        frame,
        tokens_schema(),
        started=started,
        metadata={
            "engine": engine,
            "tokenizer": embedder.name,
            "max_length": embedder.max_length,
            "max_windows": embedder.max_windows,
            "read_length": embedder.read_length,
            "windows_total": sum(map(embedder.n_windows, frame["token_ids"].list.len())),
            "truncated": int(frame["truncated"].sum()),
            "tokens_total": int(frame["n_tokens"].sum()),
            **on_spark,
        },
    )
