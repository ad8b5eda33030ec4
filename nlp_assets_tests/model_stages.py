"""Running the model stages (tokens, features, predictions, optionally aggregates) of one day
on a temporary lake holding real cleaned sample documents: shared by the model and cache tests."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from nlp_assets import settings
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.kernels.clean import clean_documents
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.lake import Lake
from nlp_assets.resources.model_cache import ModelCacheResource
from nlp_assets.resources.models import ModelResource

DAY = "2026-11-17"
N_DOCS = 40
MODEL_STEPS = ["features", "predictions"]


def write_model_inputs(root: Path, models: ModelResource) -> Path:
    """A lake holding one day's cleaned text (real English sample documents) and a sentiment
    head for the embedder's version, so the model stages can run on it."""
    day = date.fromisoformat(DAY)
    raw = read_landing_day(Path(settings.landing_dir()), day).docs
    cleaned = clean_documents(raw.sample(n=N_DOCS * 2, seed=1), day).docs
    cleaned = cleaned.filter(pl.col("lang") == "en").head(N_DOCS)
    assert cleaned.height == N_DOCS
    lake = Lake(root)
    lake.write("cleaned_text", DAY, cleaned)
    embedder = models.embedder
    rng = np.random.default_rng(0)
    head = SentimentHead(
        ("negative", "positive"),
        rng.normal(size=(1, embedder.dim)),
        np.zeros(1),
        embedder.name,
        embedder.version,
    )
    lake.write("sentiment_model", None, head.to_frame())
    return root


def materialize_model_steps(
    lake_root: Path,
    models: ModelResource,
    cache: ModelCacheResource,
    steps: tuple[str, ...] = ("tokens", *MODEL_STEPS),
) -> dg.ExecuteInProcessResult:
    """The steps on an ephemeral instance; `result.logs` holds the run's log messages."""
    resources = build_resources(lake_dir=str(lake_root))
    resources["models"] = models
    resources["model_cache"] = cache
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        all_assets,
        selection=list(steps),
        partition_key=DAY,
        resources=resources,
        instance=instance,
        raise_on_error=True,
    )
    result.logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result


def step_metadata(result: dg.ExecuteInProcessResult, step: str) -> dict:
    (materialization,) = result.asset_materializations_for_node(step)
    return {k: v.value for k, v in materialization.metadata.items()}
