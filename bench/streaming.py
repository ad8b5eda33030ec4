"""Streaming benchmark: Kafka messages to prediction rows, micro-batches against whole-day runs.

A producer thread writes N messages (1% malformed) at a set rate to a fresh topic on a Tansu
broker started here (or `KAFKA_BOOTSTRAP_SERVERS`). Every message text is unique real text: the
paragraphs of the sample corpus's landing days (news articles, movie and drug reviews,
multilingual reviews, web feedback) and the labelled sentences, each once; past that pool, two
of them joined, never the same pair twice. So the model result cache only hits what a real
stream would repeat (nothing here), and the figures are model-bound as in production.
Meanwhile the topic's sensor is ticked and its runs executed in this process, as the daemon
would (one run at a time, the per-day limit of dagster.yaml):

- micro-batch: each run processes only its offset range (raw text to predictions); the day
  stages (quality, aggregates, report) run at most once per `NLP_KAFKA_DAY_REFRESH_MINUTES` in
  a micro-batch, and alone once the stream is quiet (what the Kafka sensors do);
- baseline: each run consumes its range the same way, then re-materialises the whole day from
  cleaned text on (what a pipeline without part scopes does per micro-batch).

Reported per mode: sustained messages/s through to predictions (valid messages / time from the
first produce to the last prediction row), p50/p95 latency from produce to the end of the run
that wrote the message's prediction row, the model cache hit rate of the features and
predictions steps, and where a run's time goes: inside its steps (of which the models' own
compute) or outside them (run start and end, event writes); and whether a micro-batch costs
more as the day fills: seconds per message of the first and last ten micro-batches. Models run
on this machine's CPU (or NLP_DEVICE). The model result cache is on in both modes by default (a
fresh namespace per mode): the baseline then re-reads model results of earlier messages from it;
`--model-cache off` shows the cost without it.

Run (uses the sentiment head `make run` trained, or trains one first):
    python -m bench.streaming --messages 100000 --rate 500
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl

from dev.kafka_drain import tick_and_run
from nlp_assets import settings
from nlp_assets.checks import all_checks
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kafka import topics as kafka_topics
from nlp_assets.kafka.messages import OffsetRange
from nlp_assets.kafka.planner import TopicSettings
from nlp_assets.kafka.resource import KafkaResource
from nlp_assets.kafka.sensors import build_kafka_sensor
from nlp_assets.kernels.ingest import doc_id_for, read_landing_day
from nlp_assets.lake import Lake
from nlp_assets.resources.lake import PART_TAG
from nlp_assets.resources.model_cache import ModelCacheResource
from nlp_assets_tests.kafka_broker import Broker, tansu_broker

DAY = "2026-11-25"
#: Runs log warnings and errors only (the figures are the output).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
MODES = ("micro-batch", "baseline")


#: A paragraph shorter than this many words is joined to the next one (headlines, bylines).
MIN_WORDS = 8


def text_pool() -> list[str]:
    """Unique real texts, in a fixed shuffled order: the landing days' paragraphs and the
    labelled sentences (what `make data` wrote)."""
    texts: set[str] = set(pl.read_parquet(settings.labelled_sentiment_path())["text"].to_list())
    landing = Path(settings.landing_dir())
    for day in sorted(p for p in landing.iterdir() if p.is_dir()) if landing.is_dir() else []:
        docs = read_landing_day(landing, date.fromisoformat(day.name)).docs
        for document in docs["text"].to_list():
            paragraph: list[str] = []
            for line in document.splitlines():
                paragraph += line.split()
                if len(paragraph) >= MIN_WORDS:
                    texts.add(" ".join(paragraph))
                    paragraph = []
    pool = sorted(texts)
    random.Random(13).shuffle(pool)
    return pool


def unique_texts(n: int, pool: list[str]) -> list[str]:
    """n distinct texts: the pool once, then pairs (j, j + k) for k = 1, 2, ..."""
    size = len(pool)
    if n > size * (size - 1):
        raise ValueError(f"{n} messages need more than the {size} texts of the pool")
    out = pool[:n]
    i = len(out)
    while len(out) < n:
        k, j = divmod(i, size)
        out.append(f"{pool[j]} {pool[(j + k) % size]}")
        i += 1
    if len(set(out)) != n:
        raise AssertionError("message texts repeat")
    return out


def produce_at_rate(
    broker: Broker, topic: str, n: int, rate: float, produced: dict[str, float]
) -> threading.Thread:
    """Start a thread producing n messages at `rate` per second; records doc_id -> time."""
    texts = unique_texts(n, text_pool())
    from confluent_kafka import Producer

    def work() -> None:
        producer = Producer(broker.producer_config)
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if i % 100 == 99:
                value = b'{"id": "broken'  # 1% malformed: dead letters
            else:
                message = {"id": f"m{i}", "text": texts[i]}
                value = json.dumps(message).encode()
                produced[doc_id_for(topic, f"m{i}", "")] = time.perf_counter()
            while True:
                try:
                    producer.produce(topic, value)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(60)

    thread = threading.Thread(target=work, name="producer", daemon=True)
    thread.start()
    return thread


def train_sentiment_head(lake_dir: Path) -> Path:
    """The sentiment head, when `make run` has not trained one in the lake yet."""
    from nlp_assets.stages.sentiment_model import SentimentTrainingConfig

    print(f"training the sentiment head into {lake_dir} (no trained head in the lake)")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            all_assets,
            selection=["sentiment_model"],
            instance=instance,
            resources=build_resources(lake_dir=str(lake_dir)),
            run_config=dg.RunConfig(
                {
                    "sentiment_model": SentimentTrainingConfig(
                        labelled_path=settings.labelled_sentiment_path()
                    )
                }
            ),
        )
    if not result.success:
        raise RuntimeError("training the sentiment head failed")
    return lake_dir / "sentiment_model"


def run_mode(
    mode: str, broker: Broker, args: argparse.Namespace, trained: Path, workdir: Path
) -> dict[str, float]:
    topic = broker.create_topic(f"bench-{mode}", partitions=args.partitions)
    root = workdir / mode
    shutil.copytree(trained, root / "lake" / "sentiment_model")
    lake = Lake(root / "lake")
    resources = {
        **build_resources(
            lake_dir=str(root / "lake"),
            landing_dir=str(root / "landing"),
            reports_dir=str(root / "reports"),
        ),
        "kafka": KafkaResource(bootstrap_servers=broker.bootstrap),
        # a namespace per mode: the second mode must not find the first one's model results
        "model_cache": ModelCacheResource(
            namespace=f"bench-{mode}-{time.time_ns()}", enabled=args.model_cache == "on"
        ),
    }
    assets = [*all_assets, *all_checks, kafka_topics.topic_spec(topic)]
    config = dataclasses.replace(
        TopicSettings.from_env(topic),
        max_messages_per_run=args.max_messages_per_run,
        max_runs_per_tick=args.max_runs_per_tick,
    )
    sensor = build_kafka_sensor(config, today=lambda: DAY)
    definitions = dg.Definitions(
        assets=assets, jobs=[daily_pipeline_job], sensors=[sensor], resources=resources
    )
    pipeline = daily_pipeline_job.selection
    produced: dict[str, float] = {}
    written: dict[str, float] = {}
    costs: list[tuple[int, float, bool]] = []  # per micro-batch: messages, seconds, day stages

    with dg.instance_for_test() as instance:

        def materialise(selection, partition: str, tags: dict[str, str]) -> bool:
            result = dg.materialize(
                assets,
                selection=selection,
                partition_key=partition,
                instance=instance,
                resources=resources,
                tags=tags,
                raise_on_error=False,
                run_config=QUIET,
            )
            return result.success

        def run(request: dg.RunRequest, tags: dict[str, str]) -> bool:
            run_started = time.perf_counter()
            if PART_TAG not in tags:  # the day stages alone (a quiet or closed day)
                if mode != "micro-batch":
                    return True  # the baseline recomputes the day in every micro-batch
                ok = materialise(
                    dg.AssetSelection.assets(*(request.asset_selection or [])),
                    request.partition_key,
                    tags,
                )
                costs.append((0, time.perf_counter() - run_started, True))
                return ok
            if mode == "micro-batch":
                chosen = pipeline
                if request.asset_selection is not None:  # the part stages only
                    chosen = pipeline & dg.AssetSelection.assets(*request.asset_selection)
                ok = materialise(chosen, request.partition_key, tags)
                costs.append(
                    (
                        OffsetRange.from_tags(tags).size,
                        time.perf_counter() - run_started,
                        request.asset_selection is None,
                    )
                )
                ids = lake.read_part("predictions", DAY, tags[PART_TAG])["doc_id"]
            else:
                ok = materialise(dg.AssetSelection.assets("raw_text"), request.partition_key, tags)
                whole_day = {k: v for k, v in tags.items() if not k.startswith("nlp/")}
                whole_day.pop("dagster/run_key", None)
                rest = pipeline - dg.AssetSelection.assets("raw_text")
                ok = ok and materialise(rest, request.partition_key, whole_day)
                size = OffsetRange.from_tags(tags).size
                costs.append((size, time.perf_counter() - run_started, True))
                ids = lake.read_day("predictions", DAY)["doc_id"]
            now = time.perf_counter()
            for doc_id in ids:
                written.setdefault(doc_id, now)
            if not ok:
                raise RuntimeError(f"run {OffsetRange.from_tags(tags)} failed")
            return ok

        started = time.perf_counter()
        producer = produce_at_rate(broker, topic, args.messages, args.rate, produced)
        cursor, idle_ticks = None, 0
        while producer.is_alive() or len(written) < len(produced):
            outcome = tick_and_run(
                sensor, instance=instance, cursor=cursor, definitions=definitions, runner=run
            )
            cursor = outcome.cursor
            if outcome.requests:
                idle_ticks = 0
                continue
            if not producer.is_alive():
                idle_ticks += 1
                if idle_ticks > 3:
                    raise RuntimeError(
                        f"{len(produced) - len(written)} produced messages never reached "
                        "the predictions"
                    )
            time.sleep(args.tick_seconds)
        finished = max(written.values())
        figures = run_figures(instance)
    latencies = sorted(written[d] - produced[d] for d in produced)
    return {
        **figures,
        "messages": args.messages,
        "valid": len(produced),
        "runs": len(lake.part_names("raw_text", DAY)),
        "seconds": finished - started,
        "messages_per_s": len(produced) / (finished - started),
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
        **growth_figures(costs),
    }


def growth_figures(costs: list[tuple[int, float, bool]], k: int = 10) -> dict[str, float]:
    """Does a micro-batch cost more as the day fills? Seconds per message of the first and the
    last `k` micro-batches (those that ran the day stages included), and the day-stage runs."""
    batches = [(n, s) for n, s, _ in costs if n]
    if len(batches) < 2 * k:
        k = len(batches) // 2
    if not k:
        return {}
    first = sum(s for _, s in batches[:k]) / sum(n for n, _ in batches[:k])
    last = sum(s for _, s in batches[-k:]) / sum(n for n, _ in batches[-k:])
    return {
        "micro_batches": len(batches),
        "growth_k": k,
        "first_ms_per_msg": 1000 * first,
        "last_ms_per_msg": 1000 * last,
        "last_over_first": last / first,
        "day_stage_runs": sum(1 for n, _, day in costs if day),
        "day_stage_alone_runs": sum(1 for n, _, day in costs if day and not n),
    }


def run_figures(instance: dg.DagsterInstance) -> dict[str, float]:
    """Cache hit rate of the model steps, and the share of the runs' time spent outside their
    steps (run start and end, event writes) and inside the models' own compute."""
    hits = misses = 0
    model_s = 0.0
    for stage in ("features", "predictions"):
        cursor = None
        while True:
            result = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage)), limit=1000, cursor=cursor
            )
            for record in result.records:
                metadata = record.asset_materialization.metadata  # type: ignore[union-attr]
                hits += int(metadata["cache_hits"].value) if "cache_hits" in metadata else 0
                misses += int(metadata["cache_misses"].value) if "cache_misses" in metadata else 0
                if "model_seconds" in metadata:
                    model_s += float(metadata["model_seconds"].value)  # type: ignore[arg-type]
            if not result.has_more:
                break
            cursor = result.cursor
    run_s = 0.0
    by_step: dict[str, float] = {}
    in_order: dict[str, list[float]] = {}  # each step's seconds per run, oldest run first
    for run in reversed(instance.get_runs()):
        stats = instance.get_run_stats(run.run_id)
        if stats.start_time and stats.end_time:
            run_s += stats.end_time - stats.start_time
        for step in instance.get_run_step_stats(run.run_id):
            if step.start_time and step.end_time:
                seconds = step.end_time - step.start_time
                by_step[step.step_key] = by_step.get(step.step_key, 0.0) + seconds
                in_order.setdefault(step.step_key, []).append(seconds)
    step_s = sum(by_step.values())
    k = 10
    growth = {
        f"growth:{key}": statistics.mean(times[-k:]) / statistics.mean(times[:k])
        for key, times in in_order.items()
        if len(times) >= 2 * k and statistics.mean(times[:k]) > 0
    }
    return {
        "cache_hit_rate": hits / max(hits + misses, 1),
        "run_seconds": run_s,
        "outside_steps_share": (run_s - step_s) / run_s if run_s else 0.0,
        "model_compute_share": model_s / run_s if run_s else 0.0,
        # each step's share of the runs' time (checks run inside their asset's step)
        **{f"step:{key}": seconds / run_s for key, seconds in by_step.items() if run_s},
        **growth,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500.0, help="messages produced per second")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--max-messages-per-run", type=int, default=5_000)
    parser.add_argument("--max-runs-per-tick", type=int, default=10)
    parser.add_argument("--tick-seconds", type=float, default=5.0, help="sensor interval")
    parser.add_argument("--modes", default=",".join(MODES), help="micro-batch,baseline")
    parser.add_argument(
        "--model-cache",
        choices=("on", "off"),
        default="on",
        help="the model result cache (in-process LRU, or Redis with REDIS_URL) in both modes",
    )
    parser.add_argument(
        "--model-server",
        choices=("on", "off"),
        default="off",
        help="on: the runs use a model server started here (`nlp serve-models`), as deployed",
    )
    args = parser.parse_args(argv)
    results = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        if args.model_server == "on":
            from nlp_assets_tests.services import model_server

            url, _ = stack.enter_context(model_server(Path(tmp)))
            os.environ["NLP_MODEL_SERVER_URL"] = url
        trained = Path(settings.lake_dir()) / "sentiment_model"
        if not (trained / "_delta_log").exists():
            trained = train_sentiment_head(Path(tmp) / "trained")
        external = os.getenv("KAFKA_BOOTSTRAP_SERVERS")
        if external:
            broker = Broker(bootstrap=external, is_tansu=False)
        else:
            address, process = stack.enter_context(tansu_broker())
            broker = Broker(bootstrap=address, is_tansu=True, process=process)
        for mode in args.modes.split(","):
            results[mode] = run_mode(mode, broker, args, trained, Path(tmp))
            print(f"{mode}: {json.dumps({k: round(v, 2) for k, v in results[mode].items()})}")

    print(
        f"\n{args.messages} messages at {args.rate:g}/s, {args.partitions} partitions, "
        f"<= {args.max_messages_per_run} messages a run, tick every {args.tick_seconds:g} s, "
        f"model cache {args.model_cache}, model server {args.model_server}"
    )
    header = "mode          runs    msg/s    p50 s    p95 s  cache hits  outside steps  models"
    print(header)
    for mode, r in results.items():
        print(
            f"{mode:<12} {r['runs']:>5} {r['messages_per_s']:>8.1f} {r['p50_s']:>8.1f} "
            f"{r['p95_s']:>8.1f} {r['cache_hit_rate']:>11.1%} {r['outside_steps_share']:>14.1%} "
            f"{r['model_compute_share']:>7.1%}"
        )
    for mode, r in results.items():
        steps = sorted(
            ((k[5:], v) for k, v in r.items() if k.startswith("step:")), key=lambda x: -x[1]
        )
        print(f"{mode} share of run time by step: " + ", ".join(f"{k} {v:.1%}" for k, v in steps))
        grown = ", ".join(
            f"{k[7:]} {v:.2f}x"
            for k, v in sorted(r.items(), key=lambda kv: -kv[1])
            if k.startswith("growth:") and r.get(f"step:{k[7:]}", 0) >= 0.01
        )
        if grown:
            print(f"{mode} step seconds, last 10 runs over first 10: {grown}")
        if "last_over_first" in r:
            print(
                f"{mode} cost per message, first {r['growth_k']:.0f} micro-batches "
                f"{r['first_ms_per_msg']:.2f} ms, last {r['growth_k']:.0f} "
                f"{r['last_ms_per_msg']:.2f} ms: {r['last_over_first']:.2f}x over "
                f"{r['micro_batches']:.0f} micro-batches; day stages ran in "
                f"{r['day_stage_runs']:.0f} runs ({r['day_stage_alone_runs']:.0f} alone, "
                f"interval {settings.kafka_day_refresh_minutes():g} min)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
