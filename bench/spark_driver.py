"""The Spark driver's memory on a backfill: rows collected to the driver against rows written
by the executors (`nlp_assets.engines.sink`).

The documents of `bench.engines --backfill` (`--docs` unique documents over `--days` days, real
sentences of the sample sources) go through the Spark engine only, stage after stage, on a
standalone cluster on this machine (`--workers` one-core workers, each executor its own JVM,
so the driver JVM holds no executor's memory):

- `--mode collect`: each stage's rows come back to the driver as a polars frame (the path every
  stage took before executors wrote; it also runs at commit 7bca78f) and feed the next stage;
- `--mode lake`: the executors write each stage's rows into a Delta table under a temporary
  lake and the driver commits the files; the next stage's input is read back from the lake, as
  the lake IO manager loads it in a Dagster run.

Cleaning and tokens run on every document; the model stages (features, predictions) on
`--model-docs` of them (0: none). Prints, per stage, docs/s and wall time, and at the end the
driver's peak resident memory: the Python process's and the driver JVM's (`VmHWM` in
/proc/<pid>/status, the JVM's read every half second while it lives).

Run: `python -m bench.spark_driver --docs 100000 --mode lake [--model-docs 2000]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench import backfill as backfill_kit
from nlp_assets import settings
from nlp_assets.engines import spark as spark_engine
from nlp_assets.engines import workers
from nlp_assets.kernels.clean import CleanConfig
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.resources.models import ModelResource
from nlp_assets.resources.spark import SparkResource

FIRST_DAY = date(2026, 10, 1)


def vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set (KiB), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def driver_jvm(python_pid: int) -> int | None:
    """The driver JVM: the child java process of this Python process (py4j's gateway)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == python_pid and b"java" in cmdline and b"SparkSubmit" in cmdline:
            return int(entry.name)
    return None


class JvmPeak(threading.Thread):
    """Reads the driver JVM's VmHWM every half second (its last value survives its exit)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pid: int | None = None
        self.peak_kib = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.pid = self.pid or driver_jvm(os.getpid())
            if self.pid:
                self.peak_kib = max(self.peak_kib, vm_hwm_kib(self.pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--mode", choices=("collect", "lake"), required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model-docs", type=int, default=0)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--executor-memory", default="1g")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from dev.spark_cluster import standalone_cluster

    raw = backfill_kit.unique_documents(
        backfill_kit.sentence_pools(
            Path(settings.landing_dir()), Path(settings.labelled_sentiment_path())
        ),
        args.docs,
        FIRST_DAY,
        args.days,
    )
    days = sorted(d.isoformat() for d in raw["ingest_date"].unique().to_list())
    models = ModelResource(device=os.getenv("NLP_DEVICE", "cpu"))
    config = workers.model_config(models)
    print(f"{raw.height:,} documents over {len(days)} days; mode {args.mode}", flush=True)
    peak = JvmPeak()
    peak.start()
    times: dict[str, tuple[int, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-spark-driver-") as tmp,
        standalone_cluster(workers=args.workers) as master,
    ):
        resource = SparkResource(
            master=master,
            app_name="bench-spark-driver",
            spark_config={
                "spark.driver.memory": args.driver_memory,
                "spark.driver.maxResultSize": "4g",
                "spark.executor.memory": args.executor_memory,
                "spark.sql.shuffle.partitions": str(max(8, 4 * args.workers)),
                "spark.task.maxFailures": "1",
            },
        )
        spark = resource.spark_session
        lake: Any = None
        if args.mode == "lake":
            from nlp_assets.engines.sink import LakeSink
            from nlp_assets.lake import Lake

            lake = Lake(Path(tmp) / "lake")

        def sink(asset: str) -> Any:
            return None if lake is None else LakeSink(lake, asset, days)

        def stage(name: str, n: int, fn: Any) -> Any:
            started = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - started
            times[name] = (n, seconds)
            print(
                f"  {name}: {n:,} docs in {seconds:.1f} s ({n / seconds:,.1f} docs/s)", flush=True
            )
            return out

        def read(asset: str, frame: Any) -> pl.DataFrame:
            """The next stage's input: the collected frame, or the table (as the IO manager)."""
            return frame if lake is None else lake.read_days(asset, days)

        clean_config = CleanConfig()
        kw = {} if lake is None else {"sink": sink("cleaned_text")}
        out = stage(
            "cleaned",
            raw.height,
            lambda: spark_engine.clean_on_spark(spark, raw, clean_config, **kw),
        )
        cleaned = read("cleaned_text", out.docs if lake is None else None)
        del out
        kw = {} if lake is None else {"sink": sink("tokens")}
        out = stage(
            "tokens",
            cleaned.height,
            lambda: spark_engine.tokenize_on_spark(spark, cleaned, config, **kw),
        )
        if args.model_docs:
            tokens = read("tokens", out)
            del out
            step = max(1, cleaned.height // args.model_docs)
            model_cleaned = cleaned.gather_every(step).head(args.model_docs)
            model_tokens = tokens.join(model_cleaned.select("doc_id"), on="doc_id", how="semi")
            kw = {} if lake is None else {"sink": sink("features")}
            out = stage(
                "features",
                model_cleaned.height,
                lambda: spark_engine.features_on_spark(
                    spark, model_cleaned, model_tokens, config, **kw
                ),
            )
            features = read("features", out)
            del out
            embedder = models.embedder
            head = SentimentHead(
                ("negative", "positive"),
                np.random.default_rng(0).normal(size=(1, embedder.dim)),
                np.zeros(1),
                embedder.name,
                embedder.version,
            )
            kw = {} if lake is None else {"sink": sink("predictions")}
            stage(
                "predictions",
                model_cleaned.height,
                lambda: spark_engine.predict_on_spark(
                    spark,
                    model_cleaned,
                    features,
                    head,
                    config,
                    sentiment_model_name="bench-head",
                    languages=["en"],
                    **kw,
                ),
            )
        time.sleep(1.0)  # one more reading of the JVM before it stops
        resource.stop()
    peak.stop.set()
    peak.join()
    total = sum(s for _, s in times.values())
    print(f"\nmode {args.mode}: {len(times)} stages in {total:.1f} s")
    print(f"{'stage':<12}{'docs':>9}{'seconds':>9}{'docs/s':>10}")
    for name, (n, seconds) in times.items():
        print(f"{name:<12}{n:>9,}{seconds:>9.1f}{n / seconds:>10,.1f}")
    python_mib = vm_hwm_kib(os.getpid()) / 1024
    print(
        f"driver peak RSS: Python {python_mib:,.0f} MiB, driver JVM {peak.peak_kib / 1024:,.0f} "
        f"MiB, together {python_mib + peak.peak_kib / 1024:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
