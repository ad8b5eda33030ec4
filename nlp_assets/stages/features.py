import time

import dagster as dg
import polars as pl

from nlp_assets.engines import LOCAL, SPARK
from nlp_assets.engines.local import by_day
from nlp_assets.engines.sink import Committed
from nlp_assets.engines.switch import EngineConfig, choose_engine, run_days, run_on_spark
from nlp_assets.engines.workers import model_config
from nlp_assets.kernels.features import build_features
from nlp_assets.resources.lake import LakeResource
from nlp_assets.resources.model_cache import CacheStats, ModelCacheResource
from nlp_assets.resources.models import (
    CachedEmbedder,
    InferenceStats,
    ModelResource,
    gpu_op_tags,
    model_pool,
    step_metadata,
)
from nlp_assets.resources.spark import SparkResource
from nlp_assets.schemas import features_schema_for
from nlp_assets.stages.common import lake_sink, stage_asset, stage_result


def _check(frame: pl.DataFrame):
    """The features schema for the frame's embedding width (the worker's model's)."""
    return features_schema_for(frame.schema["embedding"].size)  # type: ignore[attr-defined]


@stage_asset(
    "features",
    group="features",
    kinds={"pytorch", "parquet"},
    description="Word n-grams (1-3) per document, top TF-IDF terms with idf over the day, and "
    "L2-normalised sentence embeddings from the model resource.",
    scope="part",
    engines=True,
    models=True,
    pool=model_pool(),
    op_tags=gpu_op_tags(),
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def features(
    context: dg.AssetExecutionContext,
    config: EngineConfig,
    models: ModelResource,
    spark: SparkResource,
    model_cache: ModelCacheResource,
    lake: LakeResource,
    cleaned_text: pl.DataFrame,
    tokens: pl.DataFrame,
):
    started = time.perf_counter()
    if choose_engine(context, config, tokens.height) == SPARK:
        from nlp_assets.engines.spark import features_on_spark

        # the executors write the rows into the lake, the driver commits them
        committed, on_spark = run_on_spark(
            spark,
            features_on_spark,
            cleaned_text,
            tokens,
            model_config(models),
            cache_config=model_cache.worker_config(),
            sink=lake_sink(context, lake, _check),
        )
        assert isinstance(committed, Committed)
        return stage_result(context, committed, None, started=started, metadata=on_spark)
    served = models.serve("embedding")  # loaded once per process, then cached
    loaded = time.perf_counter()
    cache_stats, inference = CacheStats(), InferenceStats()

    def one_day(day_tokens: pl.DataFrame) -> pl.DataFrame:  # TF-IDF's idf is over one day
        texts = day_tokens.select("doc_id").join(
            cleaned_text.select("doc_id", "text"), on="doc_id", how="left", maintain_order="left"
        )["text"]
        embedder = CachedEmbedder(
            served.model,
            texts.to_list(),
            model_cache.backend(),
            model_cache.namespace,
            cache_stats,
            inference,
            warn=context.log.warning,
        )
        return build_features(cleaned_text, day_tokens, embedder)

    days = run_days(context)
    frame = pl.concat([one_day(part) for _, part in by_day(tokens, days)])
    embedder = served.model
    return stage_result(
        context,
        frame,
        features_schema_for(embedder.dim),
        started=started,
        metadata={
            "engine": LOCAL,
            "embedding_model": embedder.name,
            "embedding_model_version": embedder.version,
            "model_load_seconds": round(loaded - started, 3),
            **step_metadata([served], cache_stats, inference),
        },
    )
