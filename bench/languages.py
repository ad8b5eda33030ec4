"""Held-out sentiment accuracy for French, German and Dutch: TF-IDF (word + char n-grams) +
logistic regression (what `sentiment_languages` trains) against a logistic head on the English
MiniLM sentence embeddings (the model the English head uses), in one run, on the same folds.

Per language: the pattern review polarity set less the reviews the sample corpus lands
(`sentiment_languages.language_reviews`); 5-fold stratified out-of-fold accuracy with its 95%
Wilson interval, macro-F1, and the accuracy of the model fitted on the whole pool on the
landed sample (never trained on). Run: `python -m bench.languages` (after `make data`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression

from dev.sample_corpus import fetch_pattern_corpora
from nlp_assets import settings
from nlp_assets.kernels.sentiment_languages import (
    LANGUAGES,
    accuracy_figures,
    fit_language_model,
    language_reviews,
    out_of_fold_predictions,
)


def tfidf_figures(pool: pl.DataFrame, landed: pl.DataFrame, lang: str, c: float) -> dict:
    texts, labels = pool["text"].to_list(), pool["label"].to_list()

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        model = fit_language_model([texts[i] for i in train], [labels[i] for i in train], lang, c=c)
        proba = model.predict_proba_texts([texts[i] for i in test])
        return np.asarray(model.labels)[proba.argmax(axis=1)]

    started = time.perf_counter()
    held_out = accuracy_figures(labels, out_of_fold_predictions(texts, labels, fit_predict))
    model = fit_language_model(texts, labels, lang, c=c)
    seconds = time.perf_counter() - started
    predicted = np.asarray(model.labels)[
        model.predict_proba_texts(landed["text"].to_list()).argmax(axis=1)
    ]
    return {
        **held_out,
        "landed": accuracy_figures(landed["label"].to_list(), predicted),
        "seconds": seconds,
    }


def minilm_figures(pool: pl.DataFrame, landed: pl.DataFrame, embed) -> dict:
    labels = pool["label"].to_list()
    started = time.perf_counter()
    x = embed(pool["text"].to_list())
    y = np.asarray(labels)

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return LogisticRegression(C=4.0, max_iter=2_000).fit(x[train], y[train]).predict(x[test])

    held_out = accuracy_figures(labels, out_of_fold_predictions(labels, labels, fit_predict))
    head = LogisticRegression(C=4.0, max_iter=2_000).fit(x, y)
    seconds = time.perf_counter() - started
    predicted = head.predict(embed(landed["text"].to_list()))
    return {
        **held_out,
        "landed": accuracy_figures(landed["label"].to_list(), predicted),
        "seconds": seconds,
    }


def row(lang: str, method: str, f: dict) -> dict:
    return {
        "lang": lang,
        "method": method,
        "n_pool": f["n"],
        "cv_accuracy": round(f["accuracy"], 3),
        "cv_ci95": f"{f['ci95_low']:.3f}-{f['ci95_high']:.3f}",
        "cv_macro_f1": round(f["macro_f1"], 3),
        "n_landed": f["landed"]["n"],
        "landed_accuracy": round(f["landed"]["accuracy"], 3),
        "landed_ci95": f"{f['landed']['ci95_low']:.3f}-{f['landed']['ci95_high']:.3f}",
        "seconds": round(f["seconds"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=settings.data_dir() / "cache")
    parser.add_argument("--no-minilm", action="store_true", help="TF-IDF only (no encoder)")
    parser.add_argument("--c", type=float, action="append", help="TF-IDF C values (default 10)")
    parser.add_argument("--max-pool", type=int, default=0, help="Subsample each pool (0: all)")
    parser.add_argument("--lang", action="append", help=f"only these of {list(LANGUAGES)}")
    args = parser.parse_args(argv)
    corpora = fetch_pattern_corpora(args.cache)
    embed = None
    if not args.no_minilm:
        from nlp_assets.resources.models import ModelResource

        embedder = ModelResource().embedder
        embed = embedder.embed_texts
    rows: list[dict] = []
    for lang in args.lang or LANGUAGES:
        done = len(rows)
        pool, landed = language_reviews(corpora, lang)
        if args.max_pool and pool.height > args.max_pool:
            pool = pool.sample(n=args.max_pool, seed=0)
        for c in args.c or [10.0]:
            rows.append(row(lang, f"tfidf-logreg C={c:g}", tfidf_figures(pool, landed, lang, c)))
        if embed is not None:
            rows.append(row(lang, "minilm-logreg C=4", minilm_figures(pool, landed, embed)))
        for finished in rows[done:]:
            print(finished, flush=True)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        print(pl.DataFrame(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
