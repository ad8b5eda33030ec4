"""Stage assets invoked directly: the guards that sit in the wiring, not in the kernels."""

from __future__ import annotations

from datetime import date

import dagster as dg
import numpy as np
import polars as pl
import pytest

from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.resources.lake import LakeResource
from nlp_assets.resources.model_cache import ModelCacheResource
from nlp_assets.resources.spark import SparkResource
from nlp_assets.stages.predictions import PredictionConfig, predictions

DAY = "2026-11-18"


def test_predictions_refuse_a_head_trained_on_other_embeddings(models, tmp_path) -> None:
    head = SentimentHead(("negative", "positive"), np.zeros((1, 4)), np.zeros(1), "m", "old")
    features = pl.DataFrame(
        {
            "doc_id": ["0000000000000001"],
            "ingest_date": [date.fromisoformat(DAY)],
            "embedding": pl.Series([[0.5, 0.5, 0.5, 0.5]], dtype=pl.Array(pl.Float32, 4)),
            "embedding_model_version": ["new"],
        }
    )
    context = dg.build_asset_context(partition_key=DAY)
    with pytest.raises(dg.Failure, match="re-materialise sentiment_model") as failure:
        predictions(
            context,
            config=PredictionConfig(),
            models=models,
            model_cache=ModelCacheResource(url_env_var=""),
            spark=SparkResource(),  # lazy: never started on the local engine
            lake=LakeResource(root=str(tmp_path)),
            cleaned_text=pl.DataFrame(),
            features=features,
            sentiment_model=head.to_frame(),
        )
    assert failure.value.allow_retries is False
