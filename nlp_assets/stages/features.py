import time

import dagster as dg
import polars as pl

from nlp_assets.kernels.features import build_features
from nlp_assets.schemas import features_schema_for
from nlp_assets.stages.common import stage_asset, stage_result
from resources.models import ModelResource


@stage_asset(
    "features",
    group="features",
    kinds={"pytorch", "parquet"},
    description="Word n-grams (1-3) per document, top TF-IDF terms with idf over the day, and "
    "L2-normalised sentence embeddings from the model resource.",
    pool="models",
)
def features(
    context: dg.AssetExecutionContext,
    models: ModelResource,
    cleaned_text: pl.DataFrame,
    tokens: pl.DataFrame,
):
    started = time.perf_counter()
    embedder = models.embedder  # loaded once per process, then cached
    loaded = time.perf_counter()
    frame = build_features(cleaned_text, tokens, embedder)
    return stage_result(
        context,
        frame,
        features_schema_for(embedder.dim),
        started=started,
        metadata={
            "embedding_model": embedder.name,
            "embedding_model_version": embedder.version,
            "device": embedder.device,
            "model_load_seconds": round(loaded - started, 3),
        },
    )
