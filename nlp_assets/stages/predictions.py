import time
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from nlp_assets.engines import LOCAL, SPARK
from nlp_assets.engines.sink import Committed
from nlp_assets.engines.switch import EngineConfig, choose_engine, run_on_spark
from nlp_assets.engines.workers import model_config, prediction_models
from nlp_assets.kernels.predict import predict_documents
from nlp_assets.kernels.sentiment import SENTIMENT_MODEL_NAME, SentimentHead
from nlp_assets.kernels.sentiment_languages import models_to_frame
from nlp_assets.resources.lake import LakeResource
from nlp_assets.resources.model_cache import CacheStats, ModelCacheResource
from nlp_assets.resources.models import (
    InferenceStats,
    ModelResource,
    gpu_op_tags,
    model_pool,
    step_metadata,
)
from nlp_assets.resources.spark import SparkResource
from nlp_assets.schemas import predictions_schema
from nlp_assets.stages import sentiment_languages
from nlp_assets.stages.common import lake_sink, stage_asset, stage_result


def _summary(frame: pl.DataFrame) -> dict[str, Any]:
    """The stage's counts of some of its rows (added up over the files the executors write)."""
    labelled = frame.filter(pl.col("sentiment_label").is_not_null())
    return {
        "sentiment_models": [
            f"{name}@{version}"
            for name, version in frame.select("sentiment_model", "sentiment_model_version")
            .unique()
            .iter_rows()
        ],
        "ner_models": [
            f"{name}@{version}"
            for name, version in frame.select("ner_model", "ner_model_version")
            .drop_nulls()
            .unique()
            .iter_rows()
        ],
        "labelled": labelled.height,
        "positive": int((labelled["sentiment_label"] == "positive").sum()),
        "entities": int(frame["entities"].list.len().sum()),
    }


def _check(_frame: pl.DataFrame):
    return predictions_schema()


class PredictionConfig(EngineConfig):
    languages: list[str] = Field(
        default=["en"],
        description="Languages the sentiment and NER models serve; other documents are kept "
        "with null predictions and a skipped_reason.",
    )


@stage_asset(
    "predictions",
    group="inference",
    kinds={"spacy", "scikitlearn", "parquet"},
    description="Sentiment (label and P(positive)) and named entities (text, label, span in "
    "the cleaned text) per document, with the name and version of each model.",
    scope="part",
    engines=True,
    models=True,
    pool=model_pool(),
    op_tags=gpu_op_tags(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[sentiment_languages.ASSET],  # read from the lake: absent, fr/nl stay skipped
)
def predictions(
    context: dg.AssetExecutionContext,
    config: PredictionConfig,
    models: ModelResource,
    spark: SparkResource,
    model_cache: ModelCacheResource,
    lake: LakeResource,
    cleaned_text: pl.DataFrame,
    features: pl.DataFrame,
    sentiment_model: pl.DataFrame,
):
    started = time.perf_counter()
    head = SentimentHead.from_frame(sentiment_model)
    used = set(features["embedding_model_version"].unique())
    if used - {head.embedding_model_version}:
        raise dg.Failure(  # a retry cannot fix this: no retries
            allow_retries=False,
            description=f"sentiment_model was trained on {head.embedding_model}@"
            f"{head.embedding_model_version} embeddings but features hold {sorted(used)}: "
            "re-materialise sentiment_model (or features) with the same embedding model",
        )
    if choose_engine(context, config, features.height) == SPARK:
        from nlp_assets.engines.spark import predict_on_spark

        # Same models, cache, A/B split and per-language models as below, in the executors'
        # Python workers, which write the rows into the lake; the driver commits them.
        by_language = sentiment_languages.load_language_models(lake, context.log.warning)
        committed, engine = run_on_spark(
            spark,
            predict_on_spark,
            cleaned_text,
            features,
            head,
            model_config(models),
            sentiment_model_name=SENTIMENT_MODEL_NAME,
            languages=config.languages,
            cache_config=model_cache.worker_config(),
            sink=lake_sink(context, lake, _check, _summary),
            language_models=models_to_frame(by_language) if by_language else None,
        )
        assert isinstance(committed, Committed)
        summary = committed.summary
        return stage_result(
            context,
            committed,
            None,
            started=started,
            metadata=_metadata(summary, committed.rows, head, "", engine),
        )
    else:
        # Models from the registry, each wrapped in the result cache; A/B candidates if set.
        cache_stats, inference = CacheStats(), InferenceStats()
        chosen = prediction_models(
            models,
            models.serve,
            models.model_registry().get,
            cache=model_cache.backend(),
            namespace=model_cache.namespace,
            stats=cache_stats,
            inference=inference,
            warn=context.log.warning,
        )
        frame = predict_documents(
            cleaned_text,
            features,
            head,
            chosen.ner,
            sentiment_model_name=SENTIMENT_MODEL_NAME,
            languages=config.languages,
            sentiment_text_model=chosen.text_model,
            sentiment_candidate=chosen.candidates.get("sentiment"),
            ner_candidate=chosen.candidates.get("entities"),
        )
        engine = {"engine": LOCAL, **step_metadata(chosen.served, cache_stats, inference)}
        ner_name = f"{chosen.ner.name}@{chosen.ner.version}"
    # Documents skipped for their language that a per-language model serves (fr, nl).
    frame, _ = sentiment_languages.serve_languages(
        frame, cleaned_text, lake, models, lambda model: model, context.log.warning
    )
    return stage_result(
        context,
        frame,
        predictions_schema(),
        started=started,
        metadata=_metadata(_summary(frame), frame.height, head, ner_name, engine),
    )


def _metadata(
    summary: dict[str, Any], rows: int, head: SentimentHead, ner_name: str, engine: dict
) -> dict[str, Any]:
    labelled = int(summary.get("labelled", 0))
    return {
        "sentiment_model": ", ".join(sorted(summary.get("sentiment_models", [])))
        or f"{SENTIMENT_MODEL_NAME}@{head.version}",
        "ner_model": ", ".join(sorted(summary.get("ner_models", []))) or ner_name,
        "skipped": rows - labelled,
        "positive_share": float(summary.get("positive", 0)) / labelled if labelled else 0.0,
        "entities": int(summary.get("entities", 0)),
        **engine,
    }
