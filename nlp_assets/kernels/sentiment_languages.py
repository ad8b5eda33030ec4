"""Sentiment for French, German and Dutch: one TF-IDF (word and character n-grams) logistic
regression per language, trained on the review polarity sets of Debian's python3-pattern.

Every review that the sample corpus lands (`pattern_corpora.foreign_sample`, the same
deterministic selection) is kept out of training, compared by normalised text, so the landing
days are a second held-out set. A trained model is stored as a plain table (term, idf,
coefficient), never a pickle, and is versioned by a hash of that content. Prediction rebuilds
the exact TF-IDF transform from the table with a fixed-vocabulary `CountVectorizer`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import sparse

from nlp_assets.kernels.pattern_corpora import (
    FOREIGN_REVIEWS,
    foreign_sample,
    read_polarity_csv,
    text_key,
)
from nlp_assets.kernels.predict import PREDICTED_COLUMNS
from nlp_assets.kernels.sentiment import wilson_interval

LANGUAGES: tuple[str, ...] = tuple(FOREIGN_REVIEWS)  # fr, de, nl
MODEL_NAME = "tfidf-logreg-sentiment"
#: `ner_model` of a served document whose language has no entity model (the column is
#: required, in the lake and the warehouse): no entities, and this name says why.
NO_ENTITY_MODEL = "none"

#: The two n-gram analyzers whose (separately L2-normalised) TF-IDF blocks are concatenated.
ANALYZERS: dict[str, dict[str, Any]] = {
    "word": {"analyzer": "word", "ngram_range": (1, 2), "lowercase": True},
    "char": {"analyzer": "char_wb", "ngram_range": (2, 5), "lowercase": True},
}
MIN_DF = 2
C = 10.0

MODEL_SCHEMA: dict[str, pl.DataType] = {
    "lang": pl.String(),
    "kind": pl.String(),  # word | char | intercept
    "term": pl.String(),
    "idf": pl.Float64(),
    "coef": pl.Float64(),
    "labels": pl.String(),  # JSON list, the second is the positive class
    "config": pl.String(),  # JSON of the analyzers, min_df and C
    "model_version": pl.String(),
}


# --- data ---------------------------------------------------------------------------------


def landed_sample_keys(corpora_dir: Path) -> dict[str, set[str]]:
    """Normalised texts (`text_key`) of the reviews the sample corpus lands, per language."""
    keys: dict[str, set[str]] = {lang: set() for lang in LANGUAGES}
    for record in foreign_sample(corpora_dir):
        keys[record["metadata"]["lang_hint"]].add(text_key(record["text"]))
    return keys


def language_reviews(corpora_dir: Path, lang: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training pool, landed sample) of one language: text and label, one row per distinct
    text. The pool holds no text that the sample corpus lands."""
    landed_keys = landed_sample_keys(corpora_dir)[lang]
    pool: dict[str, tuple[str, str]] = {}
    landed: dict[str, tuple[str, str]] = {}
    for label, text in read_polarity_csv(corpora_dir / FOREIGN_REVIEWS[lang]):
        key = text_key(text)
        target = landed if key in landed_keys else pool
        if key and key not in target:  # the files repeat some reviews
            target[key] = (text, label)
    schema = {"text": pl.String(), "label": pl.String()}
    return (
        pl.DataFrame(list(pool.values()), schema=schema, orient="row"),
        pl.DataFrame(list(landed.values()), schema=schema, orient="row"),
    )


# --- the model ----------------------------------------------------------------------------


def _config() -> dict[str, Any]:
    return {
        "analyzers": {
            k: {**v, "ngram_range": list(v["ngram_range"])} for k, v in ANALYZERS.items()
        },
        "min_df": MIN_DF,
        "C": C,
    }


@dataclass(frozen=True)
class LanguageSentiment:
    """One language's TF-IDF logistic regression; a `TextSentimentModel` (reads text)."""

    lang: str
    labels: tuple[str, ...]
    terms: dict[str, list[str]]  # kind -> terms in column order
    idf: dict[str, np.ndarray]
    coef: np.ndarray  # (n_features,), the word block then the char block
    intercept: float
    config: dict[str, Any] = field(default_factory=_config)

    @property
    def name(self) -> str:
        return f"{MODEL_NAME}-{self.lang}"

    @property
    def version(self) -> str:
        """Content hash of vocabulary, idf and weights: the same model, the same version."""
        digest = hashlib.sha256(
            json.dumps([self.lang, self.labels, self.config], sort_keys=True).encode()
        )
        for kind in ANALYZERS:
            digest.update("\x1f".join(self.terms[kind]).encode())
            digest.update(np.asarray(self.idf[kind], dtype=np.float64).tobytes())
        digest.update(np.asarray(self.coef, dtype=np.float64).tobytes())
        digest.update(np.float64(self.intercept).tobytes())
        return digest.hexdigest()[:12]

    def features(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """The TF-IDF matrix, as `TfidfVectorizer(sublinear_tf=True)` fitted on the training
        texts gives it (one L2-normalised block per analyzer)."""
        # scikit-learn is imported on use: at module level it was 0.9 s of every run's start
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize

        blocks = []
        for kind, params in ANALYZERS.items():
            vocabulary = {term: i for i, term in enumerate(self.terms[kind])}
            counts = CountVectorizer(vocabulary=vocabulary, dtype=np.float64, **params)
            matrix = counts.transform(list(texts)).tocsr()
            matrix.data = 1.0 + np.log(matrix.data)
            matrix = matrix @ sparse.diags(np.asarray(self.idf[kind], dtype=np.float64))
            blocks.append(normalize(matrix, norm="l2"))
        return sparse.hstack(blocks, format="csr")

    def predict_proba_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)))
        logits = self.features(texts) @ self.coef + self.intercept
        p = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
        return np.stack([1.0 - p, p], axis=1)

    def to_frame(self) -> pl.DataFrame:
        rows_kind, rows_term, rows_idf = [], [], []
        for kind in ANALYZERS:
            rows_kind += [kind] * len(self.terms[kind])
            rows_term += self.terms[kind]
            rows_idf += np.asarray(self.idf[kind], dtype=np.float64).tolist()
        n = len(rows_term) + 1
        return pl.DataFrame(
            {
                "lang": [self.lang] * n,
                "kind": [*rows_kind, "intercept"],
                "term": [*rows_term, ""],
                "idf": [*rows_idf, None],
                "coef": [*np.asarray(self.coef, dtype=np.float64).tolist(), self.intercept],
                "labels": [json.dumps(list(self.labels))] * n,
                "config": [json.dumps(self.config, sort_keys=True)] * n,
                "model_version": [self.version] * n,
            },
            schema=MODEL_SCHEMA,
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> LanguageSentiment:
        """The model of a one-language frame; refuses a frame whose content does not hash to
        the version it claims (a truncated or edited table)."""
        langs = frame["lang"].unique().to_list()
        if len(langs) != 1:
            raise ValueError(f"one language per model, got {langs}")
        terms: dict[str, list[str]] = {}
        idf: dict[str, np.ndarray] = {}
        coef: list[np.ndarray] = []
        for kind in ANALYZERS:
            part = frame.filter(pl.col("kind") == kind)
            terms[kind] = part["term"].to_list()
            idf[kind] = part["idf"].to_numpy().astype(np.float64)
            coef.append(part["coef"].to_numpy().astype(np.float64))
        model = cls(
            lang=langs[0],
            labels=tuple(json.loads(frame["labels"][0])),
            terms=terms,
            idf=idf,
            coef=np.concatenate(coef),
            intercept=float(frame.filter(pl.col("kind") == "intercept")["coef"][0]),
            config=json.loads(frame["config"][0]),
        )
        claimed = frame["model_version"][0]
        if model.version != claimed:
            raise ValueError(
                f"{model.name}: stored table hashes to {model.version}, not {claimed}: "
                "re-materialise sentiment_languages"
            )
        return model


def models_to_frame(models: Mapping[str, LanguageSentiment]) -> pl.DataFrame:
    frames = [models[lang].to_frame() for lang in sorted(models)]
    return pl.concat(frames) if frames else pl.DataFrame(schema=MODEL_SCHEMA)


def models_from_frame(frame: pl.DataFrame) -> dict[str, LanguageSentiment]:
    return {
        str(lang): LanguageSentiment.from_frame(part)
        for (lang,), part in frame.partition_by("lang", as_dict=True, maintain_order=True).items()
    }


def fit_language_model(
    texts: Sequence[str], labels: Sequence[str], lang: str, *, c: float = C
) -> LanguageSentiment:
    """Fit the TF-IDF blocks and the logistic regression on the given texts."""
    terms: dict[str, list[str]] = {}
    idf: dict[str, np.ndarray] = {}
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    blocks = []
    for kind, params in ANALYZERS.items():
        vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=MIN_DF, **params)
        blocks.append(vectorizer.fit_transform(list(texts)))
        terms[kind] = vectorizer.get_feature_names_out().tolist()
        idf[kind] = vectorizer.idf_.astype(np.float64)
    regression = LogisticRegression(C=c, max_iter=2_000)
    regression.fit(sparse.hstack(blocks, format="csr"), np.asarray(labels))
    classes = tuple(str(x) for x in regression.classes_)
    if len(classes) != 2:
        raise ValueError(f"{lang}: need two labels to train on, got {classes}")
    return LanguageSentiment(
        lang=lang,
        labels=classes,
        terms=terms,
        idf=idf,
        coef=regression.coef_[0].astype(np.float64),
        intercept=float(regression.intercept_[0]),
        config={**_config(), "C": c},
    )


# --- evaluation ---------------------------------------------------------------------------


def out_of_fold_predictions(
    texts: Sequence[str],
    labels: Sequence[str],
    fit_predict: Any,
    *,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Each text's label predicted by a model trained on the other folds (stratified)."""
    y = np.asarray(labels)
    predicted = np.empty(len(y), dtype=object)
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(np.zeros(len(y)), y):
        predicted[test] = fit_predict(train, test)
    return predicted.astype(str)


def accuracy_figures(
    truth: Sequence[str] | np.ndarray, predicted: Sequence[str] | np.ndarray
) -> dict[str, float | int]:
    from sklearn.metrics import f1_score

    truth_a, predicted_a = np.asarray(truth), np.asarray(predicted)
    n = len(truth_a)
    correct = int((truth_a == predicted_a).sum())
    low, high = wilson_interval(correct, n)
    return {
        "accuracy": correct / n if n else 0.0,
        "ci95_low": low,
        "ci95_high": high,
        "macro_f1": float(f1_score(truth_a, predicted_a, average="macro")) if n else 0.0,
        "n": n,
    }


# --- routing in the predictions stage -----------------------------------------------------


def predict_languages(
    predictions: pl.DataFrame,
    cleaned: pl.DataFrame,
    models: Mapping[str, Any],
    entity_models: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """Serve the documents of `predictions` (the output of `predict_documents`) that were
    skipped for their language and whose detected language has a model here: sentiment from
    `models[lang]` (a text model), entities from `entity_models[lang]` when there is one
    (else no entities, NER model `NO_ENTITY_MODEL`, version ""). Other rows are returned
    unchanged; a language with no model keeps its `skipped_reason`."""
    entity_models = entity_models or {}
    texts = dict(cleaned.select("doc_id", "text").iter_rows())
    langs = predictions["lang"].to_list()
    skipped = predictions["skipped_reason"].is_not_null().to_list()
    columns = {name: predictions[name].to_list() for name in PREDICTED_COLUMNS}
    doc_ids = predictions["doc_id"].to_list()
    for lang, model in models.items():
        rows = [i for i, (lg, s) in enumerate(zip(langs, skipped, strict=True)) if s and lg == lang]
        if not rows:
            continue
        batch = [texts[doc_ids[i]] for i in rows]
        proba = model.predict_proba_texts(batch)
        positive = model.labels.index("positive")
        ner = entity_models.get(lang)
        found = ner.entities(batch) if ner is not None else [[] for _ in rows]
        for i, p, ents in zip(rows, proba, found, strict=True):
            columns["sentiment_label"][i] = model.labels[int(np.argmax(p))]
            columns["sentiment_score"][i] = float(p[positive])
            columns["sentiment_model"][i] = model.name
            columns["sentiment_model_version"][i] = model.version
            columns["entities"][i] = ents
            columns["ner_model"][i] = ner.name if ner is not None else NO_ENTITY_MODEL
            columns["ner_model_version"][i] = ner.version if ner is not None else ""
            columns["skipped_reason"][i] = None
    return predictions.with_columns(
        pl.Series(name, values, dtype=predictions.schema[name]) for name, values in columns.items()
    )
