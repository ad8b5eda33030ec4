import time

import dagster as dg
import polars as pl
from pydantic import Field

from nlp_assets.engines import LOCAL, SPARK
from nlp_assets.engines.switch import EngineConfig, choose_engine
from nlp_assets.engines.workers import model_config
from nlp_assets.kernels.predict import Candidate, predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.schemas import predictions_schema
from nlp_assets.stages.common import stage_asset, stage_result
from resources.model_cache import CacheStats, ModelCacheResource
from resources.models import (
    CachedEntities,
    InferenceStats,
    ModelResource,
    TextSentiment,
    gpu_op_tags,
    step_metadata,
)
from resources.spark import SparkResource

SENTIMENT_MODEL_NAME = "minilm-logreg-sentiment"


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
    pool="gpu",
    op_tags=gpu_op_tags(),
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def predictions(
    context: dg.AssetExecutionContext,
    config: PredictionConfig,
    models: ModelResource,
    spark: SparkResource,
    model_cache: ModelCacheResource,
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
        if models.sentiment or models.ab_tests:
            context.log.info("a text sentiment model or an A/B test runs in-process only")
        else:
            from nlp_assets.engines.spark import predict_on_spark

            frame = predict_on_spark(
                spark.spark_session,
                cleaned_text,
                features,
                head,
                model_config(models),
                sentiment_model_name=SENTIMENT_MODEL_NAME,
                languages=config.languages,
            )
            return stage_result(
                context,
                frame,
                predictions_schema(),
                started=started,
                metadata={"engine": SPARK, "spark_master": spark.master},
            )
    # Models from the registry, each wrapped in the result cache; A/B candidates if set.
    cache, namespace = model_cache.backend(), model_cache.namespace
    cache_stats, inference = CacheStats(), InferenceStats()
    cached = {
        "cache": cache,
        "namespace": namespace,
        "stats": cache_stats,
        "inference": inference,
        "warn": context.log.warning,
    }
    served = [models.serve("entities")]
    ner = CachedEntities(served[0].model, **cached)
    text_model = None
    if models.sentiment:
        served.append(models.serve("sentiment"))
        text_model = TextSentiment(served[-1].model, **cached)
    candidates: dict[str, Candidate] = {}
    for task in ("sentiment", "entities"):
        test = models.ab_test(task)
        if test is not None:
            served.append(models.model_registry().get(test.candidate))
            model = served[-1].model
            wrapped = (
                TextSentiment(model, **cached)
                if task == "sentiment"
                else CachedEntities(model, **cached)
            )
            candidates[task] = Candidate(wrapped, test.share, test.salt)
    frame = predict_documents(
        cleaned_text,
        features,
        head,
        ner,
        sentiment_model_name=SENTIMENT_MODEL_NAME,
        languages=config.languages,
        sentiment_text_model=text_model,
        sentiment_candidate=candidates.get("sentiment"),
        ner_candidate=candidates.get("entities"),
    )
    labelled = frame.filter(pl.col("sentiment_label").is_not_null())
    return stage_result(
        context,
        frame,
        predictions_schema(),
        started=started,
        metadata={
            "sentiment_model": ", ".join(
                f"{name}@{version}"
                for name, version in frame.select("sentiment_model", "sentiment_model_version")
                .unique()
                .sort("sentiment_model", "sentiment_model_version")
                .iter_rows()
            )
            or f"{SENTIMENT_MODEL_NAME}@{head.version}",
            "ner_model": ", ".join(
                f"{name}@{version}"
                for name, version in frame.select("ner_model", "ner_model_version")
                .unique()
                .sort("ner_model", "ner_model_version")
                .iter_rows()
            )
            or f"{ner.name}@{ner.version}",
            "engine": LOCAL,
            "skipped": frame.height - labelled.height,
            "positive_share": float((labelled["sentiment_label"] == "positive").mean() or 0.0),
            "entities": int(frame["entities"].list.len().sum()),
            **step_metadata(served, cache_stats, inference),
        },
    )
