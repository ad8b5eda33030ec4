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

`--backfill`: a backfill at scale, local engine against a Spark standalone cluster (a master
and `--workers` one-core workers on this machine, `dev.spark_cluster`, or any
`--master`). `--days` days (30) of `--docs` documents (300,000) whose texts never repeat, made
of real sentences of the sample sources (`bench.backfill.unique_documents`), through cleaning
and tokens; the model stages (features, predictions) on as many of them, spread over every
day, as fit in `--model-budget-s` (both engines together, sized from a timed probe) or exactly
`--model-docs`. Prints docs/s per stage per engine, the machine's peak in the same run (a plain
Python loop on 1 and 2 processes, before and after), each Spark stage's wall time split into
the driver's serial share and the executors' task time (Spark's event log), and the docs/s
that Amdahl's model T(w) = serial + task / w predicts for 8 and 64 workers.
Run: `python -m bench.engines --backfill [--docs 300000] [--model-budget-s 1200]`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl

from bench import backfill as backfill_kit
from nlp_assets import settings
from nlp_assets.engines import spark as spark_engine
from nlp_assets.engines import workers
from nlp_assets.engines.local import by_day, clean_days
from nlp_assets.kernels.clean import CleanConfig, clean_documents
from nlp_assets.kernels.features import build_features
from nlp_assets.kernels.ingest import read_landing_day
from nlp_assets.kernels.predict import predict_documents
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.kernels.tokenize import tokenize_documents
from nlp_assets.resources.models import ModelResource
from nlp_assets.resources.spark import SparkResource

STAGES = ("cleaned", "tokens", "features", "predictions")
SENTIMENT_NAME = "bench-head"
BACKFILL_FIRST_DAY = date(2026, 10, 1)


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
    parser.add_argument("--docs", type=int, default=None, help="100,000 (300,000 --backfill)")
    parser.add_argument("--small", type=int, default=200, help="docs of the 'small partition'")
    parser.add_argument(
        "--master", default=None, help="local[2]; --backfill: 'standalone' (a cluster here)"
    )
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--driver-memory", default="6g")
    backfill_args = parser.add_argument_group("--backfill")
    backfill_args.add_argument("--backfill", action="store_true", help="the backfill at scale")
    backfill_args.add_argument("--days", type=int, default=30)
    backfill_args.add_argument("--workers", type=int, default=2, help="standalone workers")
    backfill_args.add_argument("--executor-memory", default="1g")
    backfill_args.add_argument(
        "--model-budget-s",
        type=float,
        default=1200.0,
        help="seconds for features and predictions on both engines together",
    )
    backfill_args.add_argument("--model-docs", type=int, default=None, help="overrides budget")
    backfill_args.add_argument("--probe", type=int, default=300, help="docs of the timed probe")
    backfill_args.add_argument("--save", type=Path, default=None, help="measurements as JSON")
    args = parser.parse_args()
    if args.backfill:
        backfill(args)
        return
    args.docs = args.docs or 100_000
    args.master = args.master or "local[2]"
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
    head = _random_head(embedder)
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


# backfill at scale ----------------------------------------------------------------------------
def backfill(args: argparse.Namespace) -> None:
    n_docs = args.docs or 300_000
    master = args.master or "standalone"
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    peak_before = (backfill_kit.cpu_loop_rate(1), backfill_kit.cpu_loop_rate(2))
    load_before = os.getloadavg()

    made_s, raw = timed(
        lambda: backfill_kit.unique_documents(
            backfill_kit.sentence_pools(
                Path(settings.landing_dir()), Path(settings.labelled_sentiment_path())
            ),
            n_docs,
            BACKFILL_FIRST_DAY,
            args.days,
        )
    )
    raw = cast(pl.DataFrame, raw)
    days = sorted(raw["ingest_date"].unique().to_list())
    models = ModelResource(device=os.getenv("NLP_DEVICE", "cpu"))
    config = workers.model_config(models)
    embedder, ner = models.embedder, models.entity_recognizer
    head = _random_head(embedder)
    print(
        f"{raw.height:,} unique documents over {len(days)} days (made in {made_s:.1f} s), "
        f"{raw['text'].str.len_chars().mean():,.0f} characters on average, sources: "
        + ", ".join(f"{s} {n:,}" for s, n in raw["source"].value_counts(sort=True).iter_rows())
    )
    with contextlib.ExitStack() as stack:
        event_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-events-")))
        cluster_s = 0.0
        if master == "standalone":
            from dev.spark_cluster import standalone_cluster

            cluster_s, master = timed(
                lambda: stack.enter_context(standalone_cluster(workers=args.workers))
            )
        start_s, resource = timed(
            lambda: _session(
                str(master),
                args.driver_memory,
                {
                    "spark.executor.memory": args.executor_memory,
                    "spark.eventLog.enabled": "true",
                    "spark.eventLog.dir": event_dir.as_uri(),
                    "spark.eventLog.compress": "false",
                    "spark.sql.shuffle.partitions": str(max(8, 4 * args.workers)),
                    "spark.ui.showConsoleProgress": "false",
                    "spark.task.maxFailures": "1",  # a failing stage fails once, not 4 times
                    "spark.sql.execution.arrow.pyspark.enabled": "true",
                },
            )
        )
        resource = cast(SparkResource, resource)
        stack.callback(resource.stop)
        spark = resource.spark_session
        parallelism = spark.sparkContext.defaultParallelism
        print(
            f"Spark master {master} ({parallelism} executor cores; cluster up in "
            f"{cluster_s:.1f} s, session in {start_s:.1f} s); embeddings {embedder.name} "
            f"({embedder.dtype}, {embedder.device}); {os.cpu_count()} CPUs, load average "
            f"{load_before[0]:.1f} when the run began",
            flush=True,
        )
        clean_config = CleanConfig()
        windows: dict[str, tuple[float, float, int]] = {}  # spark stage -> epoch start, end, docs

        failures: dict[str, str] = {}  # spark stage -> the error, when the engine raised

        def on_spark(stage: str, n: int, fn: Callable[[], object], record: bool) -> float:
            """Seconds of the Spark stage; NaN (and the error noted) when it raised."""
            started = time.time()
            try:
                seconds = timed(fn)[0]
            except Exception as error:  # a failed stage is a result here, the rest goes on
                failures[stage] = _error_line(error)
                print(f"  {stage} on Spark failed: {failures[stage][:300]}", flush=True)
                return float("nan")
            if record:
                windows[stage] = (started, time.time(), n)
            return seconds

        def run_stage(
            stage: str, frames: dict[str, pl.DataFrame], record: bool
        ) -> tuple[float, float, pl.DataFrame]:
            """(local s, spark s, the local output) of one stage on `frames`."""
            raw_part = frames["raw"]
            cleaned, tokens, features = (frames.get(k) for k in ("cleaned", "tokens", "features"))

            def local() -> object:
                if stage == "cleaned":
                    return clean_days(raw_part, days_of(raw_part), clean_config)
                if stage == "tokens":
                    return tokenize_documents(cleaned, embedder.tokenizer, embedder.max_length)
                if stage == "features":  # per day, as the features stage does
                    parts = by_day(tokens, days_of(tokens))  # type: ignore[arg-type]
                    return pl.concat([build_features(cleaned, p, embedder) for _, p in parts])
                return predict_documents(
                    cleaned, features, head, ner, sentiment_model_name=SENTIMENT_NAME
                )

            def remote() -> object:
                if stage == "cleaned":
                    return spark_engine.clean_on_spark(spark, raw_part, clean_config)
                if stage == "tokens":
                    return spark_engine.tokenize_on_spark(spark, cleaned, config)
                if stage == "features":
                    return spark_engine.features_on_spark(spark, cleaned, tokens, config)
                return spark_engine.predict_on_spark(
                    spark,
                    cleaned,
                    features,
                    head,
                    config,
                    sentiment_model_name=SENTIMENT_NAME,
                    languages=["en"],
                )

            n = frames["raw" if stage == "cleaned" else "cleaned"].height
            local_s, out = timed(local)
            spark_s = on_spark(stage, n, remote, record)
            print(
                f"  {stage}: {n:,} docs, local {local_s:.1f} s, spark {spark_s:.1f} s", flush=True
            )
            result = out.docs if stage == "cleaned" else out  # type: ignore[attr-defined]
            return local_s, spark_s, cast(pl.DataFrame, result)

        def chain(raw_part: pl.DataFrame, stages: list[str], record: bool) -> dict:
            frames = {"raw": raw_part}
            times = {}
            for stage in stages:
                local_s, spark_s, frames[stage] = run_stage(stage, frames, record)
                times[stage] = (local_s, spark_s)
            return {"frames": frames, "times": times}

        # Warm-up (models load in every Python worker), then, unless --model-docs says how
        # many, a timed probe sizes the model stages to the budget.
        probe = raw.gather_every(max(1, raw.height // args.probe)).head(args.probe)
        chain(probe.head(max(20, args.probe // 10)), list(STAGES), record=False)
        if args.model_docs:
            n_model = args.model_docs
        else:
            probe_times = chain(probe, list(STAGES), record=False)["times"]
            per_doc = (
                sum(  # a stage that failed on Spark counts as the local time there
                    local_s + (local_s if math.isnan(spark_s) else spark_s)
                    for local_s, spark_s in (probe_times[s] for s in ("features", "predictions"))
                )
                / probe.height
            )
            n_model = int(args.model_budget_s / per_doc)
            print(
                f"probe: features + predictions {per_doc * 1000:.1f} ms a document on both "
                f"engines together: model stages on {n_model:,} documents",
                flush=True,
            )
        n_model = max(1, min(n_model, raw.height))

        big = chain(raw, ["cleaned", "tokens"], record=True)
        frames = big["frames"]
        cleaned = frames["cleaned"]
        step = max(1, cleaned.height // n_model)
        model_cleaned = cleaned.gather_every(step).head(n_model)
        model_tokens = frames["tokens"].join(
            model_cleaned.select("doc_id"), on="doc_id", how="semi", maintain_order="left"
        )
        model_frames = {"raw": raw, "cleaned": model_cleaned, "tokens": model_tokens}
        times = dict(big["times"])
        for stage in ("features", "predictions"):
            local_s, spark_s, model_frames[stage] = run_stage(stage, model_frames, True)
            times[stage] = (local_s, spark_s)
        resource.stop()  # flushes the event log
        spans = backfill_kit.spark_task_spans(event_dir)

    peak_after = (backfill_kit.cpu_loop_rate(1), backfill_kit.cpu_loop_rate(2))
    duplicates = int(cleaned["is_duplicate"].sum())
    if args.save:  # the raw measurements, to re-read or re-model without re-running
        args.save.write_text(
            json.dumps(
                {
                    "times": times,
                    "windows": windows,
                    "spans": [dataclasses.astuple(s) for s in spans],
                    "peak_before": peak_before,
                    "peak_after": peak_after,
                    "docs": [raw.height, cleaned.height, model_cleaned.height],
                    "failures": failures,
                },
                indent=1,
            )
        )
    _print_backfill(
        times,
        {s: backfill_kit.split_stage(n, a, b, spans) for s, (a, b, n) in windows.items()},
        {"cleaned": raw.height, "tokens": cleaned.height, "features": model_cleaned.height},
        peak_before,
        peak_after,
        master=str(master),
        workers=args.workers,
        n_model=model_cleaned.height,
        model_days=model_cleaned["ingest_date"].n_unique(),
        duplicates=duplicates,
        budget=None if args.model_docs else args.model_budget_s,
    )
    for stage, error in failures.items():
        print(f"{stage} failed on Spark (NaN above): {error[:500]}")


def _print_backfill(
    times: dict[str, tuple[float, float]],
    splits: dict[str, backfill_kit.Split],
    docs: dict[str, int],
    peak_before: tuple[float, float],
    peak_after: tuple[float, float],
    *,
    master: str,
    workers: int,
    n_model: int,
    model_days: int,
    duplicates: int,
    budget: float | None,
) -> None:
    sized = f"within a {budget:,.0f} s budget" if budget else "as asked (--model-docs)"
    print(
        f"\ncleaning marked {duplicates} duplicates (0: no text repeats); model stages on "
        f"{n_model:,} of the cleaned documents, over {model_days} days, {sized}"
    )
    for label, (one, two) in (("before", peak_before), ("after", peak_after)):
        print(
            f"peak {label}: a Python loop runs {one / 1e6:,.1f} M it/s on 1 process, "
            f"{two / 1e6:,.1f} M it/s on 2 at once ({two / one:.2f} cores' worth free)"
        )
    print(f"\n{'stage':<12}{'docs':>9}{'local docs/s':>15}{'spark docs/s':>15}{'spark/local':>13}")
    for stage, (local_s, spark_s) in times.items():
        n = docs["features" if stage == "predictions" else stage]
        print(
            f"{stage:<12}{n:>9,}{n / local_s:>15,.1f}{n / spark_s:>15,.1f}"
            f"{local_s / spark_s:>12.2f}x"
        )
    print(
        f"\nSpark ({master}, {workers} workers x 1 core): wall = driver-only (serial) + "
        "time with tasks running; task s = sum of task times (the work more workers share)"
    )
    print(
        f"{'stage':<12}{'wall s':>9}{'serial s':>10}{'task s':>9}"
        f"{'per-worker docs/s':>19}{'serial share':>14}"
    )
    for stage, split in splits.items():
        print(
            f"{stage:<12}{split.wall_s:>9.1f}{split.serial_s:>10.1f}{split.work_s:>9.1f}"
            f"{split.per_worker_docs_s:>19,.1f}{split.serial_share:>13.1%}"
        )
    print(
        "\nAmdahl: T(w) = serial + task / w, docs/s = docs / T(w) (tasks spread evenly, each "
        "worker one core at the measured per-worker rate, driver serial time unchanged)"
    )
    print(
        f"{'stage':<12}{f'{workers} measured':>12}{f'{workers} model':>10}"
        f"{'8 workers':>11}{'64 workers':>12}{'limit':>10}"
    )
    for stage, split in splits.items():
        limit = split.docs / split.serial_s if split.serial_s else float("inf")
        print(
            f"{stage:<12}{split.docs / split.wall_s:>12,.1f}"
            f"{backfill_kit.amdahl(split, workers):>10,.1f}{backfill_kit.amdahl(split, 8):>11,.1f}"
            f"{backfill_kit.amdahl(split, 64):>12,.1f}{limit:>10,.1f}"
        )


def _error_line(error: Exception) -> str:
    """The line that says what went wrong: from a Python worker's traceback inside a Spark
    error, its last `...Error: ...` line; else the first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return f"{type(error).__name__}: " + (causes[-1] if causes else (lines or [""])[0])


def days_of(frame: pl.DataFrame) -> list[date]:
    return sorted(frame["ingest_date"].unique().to_list())


def _random_head(embedder: object) -> SentimentHead:
    """A fixed random sentiment head: its weights do not change the cost."""
    rng = np.random.default_rng(0)
    return SentimentHead(
        ("negative", "positive"),
        rng.normal(size=(1, embedder.dim)),  # type: ignore[attr-defined]
        np.zeros(1),
        embedder.name,  # type: ignore[attr-defined]
        embedder.version,  # type: ignore[attr-defined]
    )


def _needed_later(stage: str, wanted: list[str]) -> bool:
    return any(STAGES.index(w) > STAGES.index(stage) for w in wanted)


def _session(master: str, driver_memory: str, extra: dict[str, str] | None = None) -> SparkResource:
    resource = SparkResource(
        master=master,
        app_name="bench-engines",
        spark_config={
            "spark.driver.memory": driver_memory,
            "spark.driver.maxResultSize": "4g",
            **(extra or {}),
        },
    )
    resource.spark_session  # noqa: B018 - start it now, to time the start-up
    return resource


if __name__ == "__main__":
    main()
