"""The model stages under a data team's registry configuration: a broken entities model
replaced by its fallback (and the run's metadata saying so), two versions of a model in an
A/B split by doc_id, and the aggregates' per-version figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from nlp_assets.kernels.predict import ab_candidate_rows
from nlp_assets.lake import Lake
from nlp_assets.resources.model_cache import ModelCacheResource
from nlp_assets.resources.models import ABTest, ModelResource, ModelSpec
from nlp_assets_tests.model_stages import (
    DAY,
    MODEL_STEPS,
    N_DOCS,
    materialize_model_steps,
    step_metadata,
    write_model_inputs,
)


def test_fallback_and_ab_split_through_the_stages(tmp_path: Path, models: ModelResource):
    broken = tmp_path / "broken-checkpoint"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')  # no weights
    configured = ModelResource(
        device="cpu",
        registry=[
            ModelSpec(
                name="tweet-ner",
                task="entities",
                format="hf-token-classification",
                source=str(broken),
                fallback="spacy-entities",
            ),
            # the same pipeline under a second version label: two versions side by side
            ModelSpec(name="spacy-entities-v2", task="entities", format="spacy", version="v2"),
        ],
        entities="tweet-ner",
        ab_tests=[ABTest(task="entities", candidate="spacy-entities-v2", share=0.5)],
    )
    lake_root = write_model_inputs(tmp_path / "lake", models)
    result = materialize_model_steps(
        lake_root,
        configured,
        ModelCacheResource(url_env_var=""),
        steps=("tokens", *MODEL_STEPS, "aggregates"),
    )

    meta = step_metadata(result, "predictions")
    assert meta["model_fallback"] == 1
    assert "tweet-ner failed to load or warm up" in meta["model_fallback_reason"]
    assert step_metadata(result, "features")["model_fallback"] == 0
    assert meta["device"] == "cpu" and meta["tokens_per_second"] > 0

    predictions = Lake(lake_root).read_day("predictions", DAY)
    assert predictions.height == N_DOCS
    to_b = ab_candidate_rows(predictions["doc_id"].to_list(), 0.5)
    assert 0 < to_b.sum() < N_DOCS
    assert np.array_equal(predictions["ner_model_version"].to_numpy() == "v2", to_b)
    assert set(predictions.filter(~pl.Series(to_b))["ner_model_version"]) == {"3.8.0"}

    figures = step_metadata(result, "aggregates")["model_version_figures"]
    entities = {f["version"]: f for f in figures if f["task"] == "entities"}
    assert set(entities) == {"3.8.0", "v2"}
    assert entities["v2"]["n_docs"] == int(to_b.sum())
    assert entities["3.8.0"]["n_docs"] + entities["v2"]["n_docs"] == N_DOCS
    (sentiment,) = [f for f in figures if f["task"] == "sentiment"]
    assert sentiment["n_docs"] == N_DOCS
