"""The fine-tuned sentiment classifier: trained on small slices of the labelled set (a tiny
randomly initialised BERT built here, and the real MiniLM for two steps), saved as a safetensors
checkpoint versioned by its content hash, served by the registry as the A/B candidate against
the head, refused when incompatible, and kept from serving when under its floors."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
import torch

from nlp_assets import settings
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.kernels.finetune import (
    FinetuneSettings,
    IncompatibleCheckpoint,
    below_floors,
    domain_metrics,
    finetune_sentiment,
    save_checkpoint,
    wilson_interval,
)
from nlp_assets.kernels.predict import Candidate, ab_candidate_rows, predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.resources.checkpoints import CURRENT, PICKLE_SUFFIXES, content_hash, current_version
from nlp_assets.resources.models import (
    FINETUNED_MODEL_NAME,
    ModelLoadError,
    ModelResource,
    SequenceClassifier,
    default_embedding_model_path,
    finetuned_ab_test,
    finetuned_sentiment_spec,
)
from nlp_assets.stages import sentiment_finetuned as stage

ROWS_PER_CLASS = 12  # per domain x label: 48 rows, 38 train / 10 held out
TINY = FinetuneSettings(epochs=1, batch_size=8, max_length=64, seed=0)


def _tiny_bert(**labels):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30_522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        **labels,
    )


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT encoder with MiniLM's tokenizer (no download)."""
    from transformers import AutoTokenizer, BertModel

    path = tmp_path_factory.mktemp("tiny_base")
    torch.manual_seed(0)
    BertModel(_tiny_bert()).save_pretrained(path)
    AutoTokenizer.from_pretrained(default_embedding_model_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def labelled_slice() -> pl.DataFrame:
    labelled = pl.read_parquet(settings.labelled_sentiment_path())
    return labelled.filter(
        pl.int_range(pl.len()).shuffle(seed=0).over("domain", "label") < ROWS_PER_CLASS
    ).sort("domain", "label", "text")


def _train(frame: pl.DataFrame, base: Path, root: Path, **kwargs):
    return finetune_sentiment(
        frame["text"].to_list(),
        frame["label"].to_list(),
        frame["domain"].to_list(),
        base=base,
        root=root,
        settings=kwargs.pop("settings", TINY),
        **kwargs,
    )


@pytest.fixture(scope="module")
def trained(tiny_base, labelled_slice, tmp_path_factory):
    root = tmp_path_factory.mktemp("finetuned")
    return _train(labelled_slice, tiny_base, root), root


def test_checkpoint_is_safetensors_without_pickle_named_by_its_content_hash(trained):
    result, root = trained
    names = {p.name for p in result.path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    assert result.path == root / result.version
    assert content_hash(result.path) == result.version
    assert current_version(root) == result.version  # no floors given: it serves
    config = json.loads((result.path / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    # per-domain held-out figures with intervals, for both domains of the labelled set
    per_domain = {r["domain"]: r for r in result.per_domain.iter_rows(named=True)}
    assert set(per_domain) == {"drug_reviews", "movie_sentences", "all"}
    assert per_domain["all"]["n_test"] == result.metrics["n_test"] == 10
    for row in per_domain.values():
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]


def test_same_data_and_seed_give_the_same_version_changed_data_another(
    trained, tiny_base, labelled_slice, tmp_path
):
    first, _ = trained
    again = _train(labelled_slice, tiny_base, tmp_path / "again")
    assert again.version == first.version
    flipped = labelled_slice.with_columns(
        pl.when(pl.int_range(pl.len()) == pl.len() - 1)  # the last row is a positive one
        .then(pl.lit("negative"))
        .otherwise(pl.col("label"))
        .alias("label")
    )
    assert flipped["label"].to_list() != labelled_slice["label"].to_list()
    assert _train(flipped, tiny_base, tmp_path / "flipped").version != first.version
    other_seed = FinetuneSettings(**{**TINY.__dict__, "seed": 1})
    assert _train(labelled_slice, tiny_base, tmp_path / "seed", settings=other_seed).version != (
        first.version
    )


def test_registry_serves_the_checkpoint_as_the_ab_candidate_against_the_head(trained):
    result, root = trained
    resource = ModelResource(
        device="cpu",
        registry=[finetuned_sentiment_spec(str(root), "cpu")],
        ab_tests=[finetuned_ab_test(0.5)],
    )
    test = resource.ab_test("sentiment")
    assert test is not None and test.candidate == FINETUNED_MODEL_NAME
    model = resource.model_registry().get(test.candidate).model
    assert isinstance(model, SequenceClassifier)
    assert model.version == result.version and model.labels == ("negative", "positive")

    n = 40
    ids = [f"{i:016x}" for i in range(n)]
    texts = [f"the film was {'great' if i % 2 else 'awful'} ({i})" for i in range(n)]
    cleaned = pl.DataFrame(
        {"doc_id": ids, "source": "s", "lang": "en", "is_duplicate": False, "text": texts}
    )
    features = pl.DataFrame(
        {
            "doc_id": ids,
            "ingest_date": [date(2026, 11, 16)] * n,
            "embedding": pl.Series(
                np.ones((n, 2), dtype=np.float32), dtype=pl.Array(pl.Float32, 2)
            ),
        }
    )
    head = SentimentHead(("negative", "positive"), np.ones((1, 2)), np.zeros(1), "m", "v")

    class NoEntities:  # the unit under test is the sentiment split
        name, version = "none", "0"

        def entities(self, texts):
            return [[] for _ in texts]

    frame = predict_documents(
        cleaned,
        features,
        head,
        NoEntities(),
        sentiment_model_name="head",
        sentiment_candidate=Candidate(model, test.share, test.salt),
    )
    to_candidate = ab_candidate_rows(ids, test.share, test.salt)
    assert 0 < to_candidate.sum() < n
    served = frame["sentiment_model"].to_numpy()
    assert (served[to_candidate] == FINETUNED_MODEL_NAME).all()
    assert (served[~to_candidate] == "head").all()
    versions = frame["sentiment_model_version"].to_numpy()
    assert set(versions[to_candidate]) == {result.version}
    proba = model.predict_proba_texts([texts[i] for i in np.flatnonzero(to_candidate)])
    np.testing.assert_allclose(
        frame["sentiment_score"].to_numpy()[to_candidate], proba[:, 1], atol=1e-9
    )


def test_definitions_make_it_the_candidate_only_once_it_is_trained(trained, tmp_path):
    result, root = trained
    models = build_resources(lake_dir=str(tmp_path / "lake"))["models"]
    spec = models.specs()[FINETUNED_MODEL_NAME]
    assert spec.source == str((tmp_path / "lake" / "_models" / "sentiment_finetuned").resolve())
    assert models.ab_test("sentiment") is None  # not trained yet: the head serves all
    shutil.copytree(root, tmp_path / "lake" / "_models" / "sentiment_finetuned")
    assert models.ab_test("sentiment").candidate == FINETUNED_MODEL_NAME
    assert models.model_registry().get(FINETUNED_MODEL_NAME).model.version == (result.version)


def _save_classifier(root: Path, labels: list[str], *, num_labels: int | None = None) -> str:
    """A tiny classifier checkpoint published under `root` (CURRENT points at it); with
    `num_labels`, its weights have that many outputs while config.json names `labels`."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    n = num_labels or len(labels)
    model = BertForSequenceClassification(
        _tiny_bert(num_labels=n, id2label={i: f"L{i}" for i in range(n)})
    )
    tokenizer = AutoTokenizer.from_pretrained(default_embedding_model_path())
    version = save_checkpoint(model, tokenizer, root, make_current=True)
    config_path = root / version / "config.json"
    config = json.loads(config_path.read_text())
    config["id2label"] = dict(enumerate(labels))
    config["label2id"] = {label: i for i, label in enumerate(labels)}
    config_path.write_text(json.dumps(config))
    renamed = content_hash(root / version)  # republish under the new content's hash
    (root / version).rename(root / renamed)
    (root / CURRENT).write_text(renamed)
    return renamed


def _load(root: Path):
    resource = ModelResource(device="cpu", registry=[finetuned_sentiment_spec(str(root))])
    return resource.model_registry().get(FINETUNED_MODEL_NAME)


def test_a_checkpoint_with_another_label_set_is_refused(tmp_path):
    _save_classifier(tmp_path, ["negative", "neutral", "positive"])
    with pytest.raises(ModelLoadError, match=r"3 labels .*expected \['negative', 'positive'\]"):
        _load(tmp_path)


def test_a_checkpoint_whose_weights_disagree_with_its_labels_is_refused(tmp_path):
    _save_classifier(tmp_path, ["negative", "positive"], num_labels=3)
    with pytest.raises(ModelLoadError, match="names 2 labels but the classifier weights have 3"):
        _load(tmp_path)


def test_a_checkpoint_changed_on_disk_is_refused(trained, tmp_path):
    result, root = trained
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    config = copy / result.version / "config.json"
    config.write_text(config.read_text().replace('"negative"', '"negative "', 1))
    with pytest.raises(ModelLoadError, match=r"hash to .* not to the version"):
        _load(copy)


def test_training_from_a_classifier_with_other_labels_is_refused(labelled_slice, tmp_path):
    version = _save_classifier(tmp_path / "base", ["negative", "neutral", "positive"])
    with pytest.raises(IncompatibleCheckpoint, match="3 labels"):
        _train(labelled_slice, tmp_path / "base" / version, tmp_path / "out")


def test_floors_and_intervals():
    low, high = wilson_interval(80, 100)
    assert low < 0.8 < high and round(low, 3) == 0.711 and round(high, 3) == 0.867
    table = domain_metrics(["p", "n", "p", "p"], ["p", "n", "n", "p"], ["a", "a", "b", "b"])
    assert below_floors(table, {"a": {"accuracy": 0.9}, "b": {"accuracy": 0.6}}) == [
        "b accuracy 0.5 < 0.6"
    ]
    assert below_floors(table, {"c": {"macro_f1": 0.1}}) == ["c macro_f1 None < 0.1"]


def _materialize(tmp_path: Path, base: Path, labelled: Path):
    resources = build_resources(lake_dir=str(tmp_path / "lake"))
    resources["models"] = ModelResource(
        device="cpu",
        embedding_model_path=str(base),
        registry=[finetuned_sentiment_spec(str(tmp_path / "lake" / "sentiment_finetuned"))],
        ab_tests=[finetuned_ab_test(0.5)],
    )
    config = stage.SentimentFinetuneConfig(
        labelled_path=str(labelled), epochs=1, batch_size=8, device="cpu"
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            all_assets,
            selection=["sentiment_finetuned"],
            instance=instance,
            resources=resources,
            run_config=dg.RunConfig({"sentiment_finetuned": config}),
            raise_on_error=False,
        )
    return result, resources["models"]


def test_the_floor_check_blocks_a_model_below_the_floor(
    tiny_base, labelled_slice, tmp_path, monkeypatch
):
    labelled = tmp_path / "labelled.parquet"
    labelled_slice.write_parquet(labelled)
    # a random tiny BERT after one pass over 38 rows is far under the real floors
    result, models = _materialize(tmp_path, tiny_base, labelled)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.check_name == stage.FLOOR_CHECK
    assert "movie_sentences" in evaluation.metadata["below"].value
    root = tmp_path / "lake" / "sentiment_finetuned"
    assert current_version(root) is None  # nothing serves: the head keeps every document
    assert models.ab_test("sentiment") is None

    # the same training with floors it meets serves, as the A/B candidate
    monkeypatch.setattr(stage, "FLOORS", {"movie_sentences": {"accuracy": 0.0}})
    result, models = _materialize(tmp_path / "again", tiny_base, labelled)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("sentiment_finetuned")
    version = materialization.metadata["model_version"].value
    assert materialization.metadata["serving"].value is True
    assert {"accuracy_movie_sentences", "macro_f1_drug_reviews"} <= set(materialization.metadata)
    assert models.model_registry().get(FINETUNED_MODEL_NAME).model.version == version


def test_real_minilm_fine_tunes_in_a_couple_of_steps(labelled_slice, tmp_path):
    """Two steps of 8 sentences on the real all-MiniLM-L6-v2: its encoder weights move and the
    checkpoint loads in the registry."""
    from safetensors.numpy import load_file

    base = default_embedding_model_path()
    small = labelled_slice.filter(pl.col("domain") == "movie_sentences")
    tuned = _train(
        small,
        base,
        tmp_path,
        settings=FinetuneSettings(epochs=1, max_rows=16, batch_size=8, max_length=64),
    )
    assert tuned.metrics["steps"] == 2
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(tuned.path / "model.safetensors"))
    layer = "encoder.layer.5.output.dense.weight"
    before_key = next(k for k in before if k.endswith(layer))
    after_key = next(k for k in after if k.endswith(layer))
    assert before[before_key].shape == after[after_key].shape
    assert not np.array_equal(before[before_key], after[after_key])
    assert _load(tmp_path).model.version == tuned.version
