import time

import dagster as dg
import polars as pl
from pydantic import Field

from nlp_assets.kernels.predict import predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.schemas import predictions_schema
from nlp_assets.stages.common import stage_asset, stage_result
from resources.models import ModelResource

SENTIMENT_MODEL_NAME = "minilm-logreg-sentiment"


class PredictionConfig(dg.Config):
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
    pool="models",
)
def predictions(
    context: dg.AssetExecutionContext,
    config: PredictionConfig,
    models: ModelResource,
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
    ner = models.entity_recognizer
    frame = predict_documents(
        cleaned_text,
        features,
        head,
        ner,
        sentiment_model_name=SENTIMENT_MODEL_NAME,
        languages=config.languages,
    )
    labelled = frame.filter(pl.col("sentiment_label").is_not_null())
    return stage_result(
        context,
        frame,
        predictions_schema(),
        started=started,
        metadata={
            "sentiment_model": f"{SENTIMENT_MODEL_NAME}@{head.version}",
            "ner_model": f"{ner.name}@{ner.version}",
            "skipped": frame.height - labelled.height,
            "positive_share": float((labelled["sentiment_label"] == "positive").mean() or 0.0),
            "entities": int(frame["entities"].list.len().sum()),
        },
    )
