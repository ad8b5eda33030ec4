"""Local engine vs Spark engine: the same stage kernels, the same documents, docs/s each.

Documents: every landed document of the sample corpus (all days), repeated with fresh doc_ids
until there are `--docs` of them (100,000 by default; repeated texts are cleaned, tokenised and
embedded in full, only `is_duplicate` marks them). Each stage gets the same input on both
engines (the local engine's output of the stage before), so each line compares one stage:

- local: the kernel in this process (polars, torch and spaCy use the cores they find);
- spark: `nlp_assets.engines.spark` on a SparkSession with `--master` (default local[2]),
  Python workers warmed first (models loaded), so the figure is throughput, not start-up.

Then Spark's overhead on a small partition (`--small` documents): seconds on Spark minus
seconds in-process per stage, the session start-up, and where the crossover would be. Models
load before timing on both sides. Predictions use a fixed random sentiment head (its weights do
not change the cost). Run: `python -m bench.engines [--docs 2000] [--stages cleaned,tokens]`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from nlp_assets import settings
from nlp_assets.engines import spark as spark_engine
from nlp_assets.engines import workers
from nlp_assets.kernels.clean import CleanConfig, clean_documents
from nlp_assets.kernels.features import build_features
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.kernels.predict import predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.kernels.tokenize import tokenize_documents
from resources.models import ModelResource
from resources.spark import SparkResource

STAGES = ("cleaned", "tokens", "features", "predictions")
SENTIMENT_NAME = "bench-head"


def corpus(landing: Path, n_docs: int) -> pl.DataFrame:
    """`n_docs` raw documents of one ingestion day, cycled from every landed sample day."""
    days = sorted(p.name for p in landing.iterdir() if p.is_dir())
    if not days:
        raise SystemExit(f"no sample corpus under {landing}: run `make data` first")
    docs = pl.concat([read_landing_day(landing, date.fromisoformat(d)).docs for d in days])
    repeats = -(-n_docs // docs.height)
    frame = pl.concat([docs] * repeats).head(n_docs)
    return frame.with_columns(
        pl.format("bench{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(7)).alias("doc_id"),
        pl.lit(date.fromisoformat(days[0])).alias("ingest_date"),
    )


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=200, help="docs of the 'small partition'")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    raw = corpus(Path(settings.landing_dir()), args.docs)
    day = raw["ingest_date"][0]
    models = ModelResource(device=os.getenv("NLP_DEVICE", "cpu"))
    config = workers.model_config(models)
    embedder, ner = models.embedder, models.entity_recognizer
    rng = np.random.default_rng(0)
    head = SentimentHead(
        ("negative", "positive"),
        rng.normal(size=(1, embedder.dim)),
        np.zeros(1),
        embedder.name,
        embedder.version,
    )
    print(
        f"{raw.height:,} documents, {raw['text'].str.len_chars().mean():,.0f} characters on "
        f"average; embeddings {embedder.name} ({embedder.dtype}, {embedder.device}); "
        f"Spark master {args.master}; {os.cpu_count()} CPUs"
    )

    start_s, resource = timed(
        lambda: _session(args.master, args.driver_memory)  # type: ignore[return-value]
    )
    spark = resource.spark_session  # type: ignore[attr-defined]

    def runners(cleaned: pl.DataFrame, tokens: pl.DataFrame, features: pl.DataFrame):
        """stage -> (local, spark) callables over inputs of this size."""
        clean_config = CleanConfig()
        return {
            "cleaned": (
                lambda r: clean_documents(r, day, clean_config),
                lambda r: spark_engine.clean_on_spark(spark, r, clean_config),
            ),
            "tokens": (
                lambda: tokenize_documents(cleaned, embedder.tokenizer, embedder.max_length),
                lambda: spark_engine.tokenize_on_spark(spark, cleaned, config),
            ),
            "features": (
                lambda: build_features(cleaned, tokens, embedder),
                lambda: spark_engine.features_on_spark(spark, cleaned, tokens, config),
            ),
            "predictions": (
                lambda: predict_documents(
                    cleaned, features, head, ner, sentiment_model_name=SENTIMENT_NAME
                ),
                lambda: spark_engine.predict_on_spark(
                    spark,
                    cleaned,
                    features,
                    head,
                    config,
                    sentiment_model_name=SENTIMENT_NAME,
                    languages=["en"],
                ),
            ),
        }

    def measure(frame: pl.DataFrame) -> dict[str, tuple[float, float, int]]:
        """stage -> (local s, spark s, docs) on `frame`, stages chained on the local output."""
        out: dict[str, tuple[float, float, int]] = {}
        cleaned = tokens = features = None
        for stage in STAGES:
            if stage not in stages and not _needed_later(stage, stages):
                continue
            run = runners(cleaned, tokens, features)[stage]  # type: ignore[arg-type]
            if stage == "cleaned":
                local_s, result = timed(lambda run=run: run[0](frame))
                spark_s = timed(lambda run=run: run[1](frame))[0] if stage in stages else 0.0
                cleaned = result.docs  # type: ignore[attr-defined]
                out[stage] = (local_s, spark_s, frame.height)
                continue
            local_s, result = timed(run[0])
            spark_s = timed(run[1])[0] if stage in stages else 0.0
            n = cleaned.height  # type: ignore[union-attr]
            if stage == "tokens":
                tokens = result  # type: ignore[assignment]
            elif stage == "features":
                features = result  # type: ignore[assignment]
            out[stage] = (local_s, spark_s, n)
        return out

    # Small partition first: it also warms the Spark workers (models load once per worker).
    measure(raw.head(args.small))  # warm-up of both sides
    small = measure(raw.head(args.small))
    big = measure(raw)

    print(f"\nSpark session start-up: {start_s:.1f} s")
    print(f"\n{'stage':<12}{'docs':>9}{'local docs/s':>15}{'spark docs/s':>15}{'spark/local':>13}")
    for stage in stages:
        local_s, spark_s, n = big[stage]
        print(
            f"{stage:<12}{n:>9,}{n / local_s:>15,.1f}{n / spark_s:>15,.1f}"
            f"{local_s / spark_s:>12.2f}x"
        )
    print(f"\nsmall partition ({args.small} docs), warm workers:")
    print(f"{'stage':<12}{'local s':>10}{'spark s':>10}{'overhead s':>12}{'crossover docs':>20}")
    for stage in stages:
        local_s, spark_s, n = small[stage]
        big_local, big_spark, big_n = big[stage]
        overhead = spark_s - local_s
        # linear model t = fixed + n * per_doc on each side, per-doc cost from the big run
        per_doc_gain = big_local / big_n - big_spark / big_n
        if overhead <= 0:
            crossover = "none (no overhead)"
        elif per_doc_gain <= 0:
            crossover = "never here"  # Spark is not faster per document on this cluster
        else:
            crossover = f"{overhead / per_doc_gain:,.0f}"
        print(f"{stage:<12}{local_s:>10.2f}{spark_s:>10.2f}{overhead:>12.2f}{crossover:>20}")
    resource.stop()  # type: ignore[attr-defined]


def _needed_later(stage: str, wanted: list[str]) -> bool:
    return any(STAGES.index(w) > STAGES.index(stage) for w in wanted)


def _session(master: str, driver_memory: str) -> SparkResource:
    resource = SparkResource(
        master=master,
        app_name="bench-engines",
        spark_config={"spark.driver.memory": driver_memory, "spark.driver.maxResultSize": "4g"},
    )
    resource.spark_session  # noqa: B018 - start it now, to time the start-up
    return resource


if __name__ == "__main__":
    main()
