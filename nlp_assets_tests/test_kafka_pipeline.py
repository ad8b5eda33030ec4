"""Kafka micro-batches through the whole pipeline against a real broker: exactly once in the
predictions, dead letters with reasons, a failed run retried without loss or duplicates, and a
backfill of the day that recomputes the same documents from the landing folder."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from dev.kafka_drain import TickOutcome, materialize_runner, tick_and_run
from nlp_assets import settings
from nlp_assets.checks import all_checks
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kafka import topics as kafka_topics
from nlp_assets.kafka.messages import HEADER_OFFSET, HEADER_REASON, KAFKA_LANDING_DIR
from nlp_assets.kafka.planner import TopicCursor, TopicSettings
from nlp_assets.kafka.resource import KafkaResource
from nlp_assets.kafka.sensors import build_kafka_sensor
from nlp_assets.kernels.ingest import doc_id_for
from nlp_assets.lake import Lake
from nlp_assets.sensors.landing import EMPTY_DAY, day_fingerprint
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import DAY_SCOPE
from nlp_assets_tests.kafka_broker import Broker

pytestmark = pytest.mark.kafka

DAY = "2026-11-25"
NEXT_DAY = "2026-11-26"
MAX_MESSAGE_BYTES = 4_000


@pytest.fixture(scope="module")
def trained_model(trained_sentiment_head: Path) -> Path:
    """The sentiment head, trained once per session (conftest), copied into each test's lake."""
    return trained_sentiment_head


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    labelled = pl.read_parquet(settings.labelled_sentiment_path())
    return labelled.filter(pl.col("domain") == "movie_sentences")["text"].to_list()


class Pipeline:
    """A temporary lake, landing folder and instance; ticks a topic's sensor and runs its
    requests in-process, honouring run_key de-duplication as the daemon does."""

    def __init__(self, root: Path, instance, broker: Broker, topic: str, models, trained: Path):
        self.root, self.instance, self.topic = root, instance, topic
        self.lake = Lake(root / "lake")
        shutil.copytree(trained, root / "lake" / "sentiment_model")
        self.resources = {
            **build_resources(
                lake_dir=str(root / "lake"),
                landing_dir=str(root / "landing"),
                reports_dir=str(root / "reports"),
            ),
            "models": models,
            "kafka": KafkaResource(
                bootstrap_servers=broker.bootstrap, max_message_bytes=MAX_MESSAGE_BYTES
            ),
        }
        self.assets = [*all_assets, *all_checks, kafka_topics.topic_spec(topic)]
        self.cursor: str | None = None

    def sensor(self, today: str = DAY, **limits) -> dg.SensorDefinition:
        config = replace(TopicSettings.from_env(self.topic), **limits)
        return build_kafka_sensor(config, today=lambda: today)

    def definitions(self, sensor: dg.SensorDefinition) -> dg.Definitions:
        return dg.Definitions(
            assets=self.assets,
            jobs=[daily_pipeline_job],
            sensors=[sensor],
            resources=self.resources,
        )

    def run(self, request: dg.RunRequest, tags: dict[str, str]) -> bool:
        runner = materialize_runner(
            self.assets,
            daily_pipeline_job.selection,
            instance=self.instance,
            resources=self.resources,
        )
        return runner(request, tags)

    def tick(self, sensor: dg.SensorDefinition, cursor: str | None = None) -> TickOutcome:
        outcome = tick_and_run(
            sensor,
            instance=self.instance,
            cursor=self.cursor if cursor is None else cursor,
            definitions=self.definitions(sensor),
            runner=self.run,
        )
        self.cursor = outcome.cursor
        return outcome

    def predictions(self) -> pl.DataFrame:
        return self.lake.read_day("predictions", DAY)


@pytest.fixture
def make_pipeline(tmp_path: Path, kafka_broker: Broker, models, trained_model):
    with dg.instance_for_test() as instance:

        def make(topic: str) -> Pipeline:
            return Pipeline(tmp_path, instance, kafka_broker, topic, models, trained_model)

        yield make


def _valid(i: int, sentences: list[str]) -> dict:
    """A sentence or two, unique per message (a pair of labelled sentences)."""
    n = len(sentences)
    return {
        "id": f"msg-{i}",
        "text": f"{sentences[i % n]} {sentences[(i * 7 + 3) % n]}",
        "timestamp": 1_795_000_000 + i,
    }


def _invalid(i: int, kind: int) -> tuple[bytes, str]:
    """(payload, expected reason prefix), four kinds in turn."""
    if kind == 0:
        return b'{"id": "bad-%d", "text": "unterminated' % i, "invalid JSON"
    if kind == 1:
        text = "x" * MAX_MESSAGE_BYTES
        return json.dumps({"id": f"big-{i}", "text": text}).encode(), "oversized"
    if kind == 2:
        return json.dumps({"id": f"notext-{i}"}).encode(), "missing required field(s): text"
    return json.dumps({"text": f"no id {i}"}).encode(), "missing required field(s): id"


def _dead_letters(broker: Broker, topic: str) -> list[tuple[str, str, str]]:
    """Every message of the DLQ as (key = source coordinates, reason, source offset)."""
    found = []
    for message in broker.read_all(f"{topic}.dlq"):
        headers = dict(message.headers() or [])
        found.append(
            (
                message.key().decode(),
                headers[HEADER_REASON].decode(),
                headers[HEADER_OFFSET].decode(),
            )
        )
    return found


def _failing_once(original: Callable, fail_on_call: int) -> Callable:
    calls = {"n": 0}

    def predict(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_on_call:
            raise dg.Failure("simulated crash in predictions", allow_retries=False)
        return original(*args, **kwargs)

    return predict


def test_a_failed_run_is_retried_without_loss_or_duplicates_and_a_backfill_agrees(
    make_pipeline, kafka_broker: Broker, sentences, monkeypatch: pytest.MonkeyPatch
):
    import nlp_assets.stages.predictions as predictions_stage

    topic = kafka_broker.create_topic("retry", partitions=1)
    pipeline = make_pipeline(topic)
    payloads: list[bytes] = []
    expected_dead: dict[int, str] = {}
    for i in range(120):
        if i % 30 == 7:
            payload, reason = _invalid(i, (i // 30) % 4)
            expected_dead[i] = reason
        else:
            payload = json.dumps(_valid(i, sentences)).encode()
        payloads.append(payload)
    payloads.append(json.dumps(_valid(3, sentences)).encode())  # a producer re-sent msg-3
    kafka_broker.produce(topic, payloads, partition=0)
    valid_ids = {f"msg-{i}" for i in range(120) if i not in expected_dead}

    monkeypatch.setattr(
        predictions_stage,
        "predict_documents",
        _failing_once(predictions_stage.predict_documents, fail_on_call=2),
    )
    sensor = pipeline.sensor(max_messages_per_run=50, max_runs_per_tick=10)
    first = pipeline.tick(sensor)
    keys = [f"{topic}:0:0-50", f"{topic}:0:50-100", f"{topic}:0:100-121"]
    assert first.launched == keys and first.failed == [keys[1]]
    raw_parts = pipeline.lake.part_names("raw_text", DAY)
    prediction_parts = pipeline.lake.part_names("predictions", DAY)
    assert len(raw_parts) == 3 and len(prediction_parts) == 2  # the crash left run 2 half done
    prediction_count_then = pipeline.predictions().height

    # Dagster's run retry: a new run with the failed run's tags (same range, same part)
    failed = first.requests[1]
    retried = pipeline.run(failed, {**failed.tags, "dagster/run_key": failed.run_key})
    assert retried

    # a zombie: the first range's run once more, past the run_key de-duplication (a second
    # daemon, a manual re-execution). Every table of the range's part already holds the range's
    # Delta app transaction, so each refuses the commit: no version moves, nothing is doubled.
    part_tables = [
        "raw_text",
        "cleaned_text",
        "tokens",
        "features",
        "predictions",
        "quarantine/kafka",
        "quarantine/raw_text",
    ]
    versions = {table: pipeline.lake.version(table) for table in part_tables}
    zombie = first.requests[0]
    assert pipeline.run(zombie, {**zombie.tags, "dagster/run_key": f"{zombie.run_key}:zombie"})
    assert {table: pipeline.lake.version(table) for table in part_tables} == versions
    skipped = pipeline.instance.get_latest_materialization_event(dg.AssetKey("predictions"))
    assert skipped.asset_materialization.metadata["kafka_commit_skipped"].value is True

    # the cursor moved past every range: nothing more; an old cursor is de-duplicated by run_key
    assert pipeline.tick(sensor).requests == []
    replay = pipeline.tick(sensor, cursor=TopicCursor({0: 0}).to_json())
    assert replay.launched == [] and replay.deduplicated == keys

    predictions = pipeline.predictions()
    expected_doc_ids = {doc_id_for(topic, i, "") for i in valid_ids}
    assert predictions.height == len(valid_ids) == predictions["doc_id"].n_unique()
    assert set(predictions["doc_id"]) == expected_doc_ids
    assert pipeline.lake.part_names("predictions", DAY) == sorted(raw_parts)

    raw_quarantine = pipeline.lake.read_quarantine("raw_text", DAY)
    assert raw_quarantine["reason"].to_list() == [
        "duplicate doc_id: already in another part of the day"
    ]
    dead_rows = pipeline.lake.read_quarantine("kafka", DAY)
    assert sorted(dead_rows["location"]) == sorted(f"{topic}/0/{i}" for i in expected_dead)
    dlq = _dead_letters(kafka_broker, topic)
    reasons = {key: reason for key, reason, _offset in dlq}
    assert set(reasons) == {f"{topic}/0/{i}" for i in expected_dead}
    for i, reason in expected_dead.items():
        assert reasons[f"{topic}/0/{i}"].startswith(reason)
    # each dead letter reached the DLQ once: the retry of range 50-100 and the zombie of
    # range 0-50 found their raw part committed (the range's app transaction) and sent none
    assert sorted(key for key, _r, _o in dlq) == sorted(f"{topic}/0/{i}" for i in expected_dead)

    # The day stages ran once, in the tick's last micro-batch (run 2 had not landed then): the
    # retry refreshed only its part. Once the day has closed, the next tick runs them alone.
    assert [r.asset_selection is None for r in first.requests] == [False, False, True]
    assert pipeline.lake.read_day("aggregates", DAY)["n_docs"].sum() == prediction_count_then
    closing = pipeline.sensor(NEXT_DAY, max_messages_per_run=50, max_runs_per_tick=10)
    close = pipeline.tick(closing)
    (request,) = close.requests
    assert close.failed == [] and request.partition_key == DAY
    assert set(request.asset_selection or []) == {dg.AssetKey(s) for s in stage_names(DAY_SCOPE)}
    assert pipeline.tick(closing).requests == []  # closed once
    aggregates_parts = pipeline.lake.part_names("aggregates", DAY)
    assert aggregates_parts == ["day"]  # whole-day assets replace the day, never add parts
    assert pipeline.lake.read_day("aggregates", DAY)["n_docs"].sum() == len(valid_ids)

    # the landing sensor ignores what Kafka landed; a backfill of the day reads it
    landing_day = pipeline.root / "landing" / DAY
    assert sorted(p.name for p in (landing_day / KAFKA_LANDING_DIR).iterdir()) == sorted(
        f"{part}.jsonl" for part in raw_parts
    )
    assert day_fingerprint(landing_day) == EMPTY_DAY
    backfill = dg.materialize(
        pipeline.assets,
        selection=daily_pipeline_job.selection,
        partition_key=DAY,
        instance=pipeline.instance,
        resources=pipeline.resources,
    )
    assert backfill.success
    assert pipeline.lake.part_names("predictions", DAY) == ["day"]
    after = pipeline.predictions()
    assert after.height == len(valid_ids) and set(after["doc_id"]) == expected_doc_ids
    (reason,) = pipeline.lake.read_quarantine("raw_text", DAY)["reason"].to_list()
    assert reason == (  # the same re-sent message, found by the landing reader this time
        f"duplicate doc_id: same source and id (or text) as {DAY}/{KAFKA_LANDING_DIR}/"
        f"{raw_parts[0]}.jsonl line 4"
    )


def test_messages_in_bursts_over_two_partitions_reach_the_predictions_exactly_once(
    make_pipeline, kafka_broker: Broker, sentences
):
    """Bursts over two partitions, each cut into several ranges that need more than one tick
    (ranges per burst > runs per tick). `NLP_BURST_MESSAGES` scales it (the 20,000-message
    figure is `bench.streaming`'s)."""
    total, bursts, partitions = int(os.getenv("NLP_BURST_MESSAGES", "4000")), 4, 2
    topic = kafka_broker.create_topic("burst", partitions=partitions)
    pipeline = make_pipeline(topic)
    per_range = -(-total // (bursts * partitions * 3))  # three ranges a partition a burst
    sensor = pipeline.sensor(max_messages_per_run=per_range, max_runs_per_tick=4)
    rng = random.Random(4)
    bad = set(rng.sample(range(total), k=total * 2 // 100))  # 2% malformed or oversized
    expected_dead: dict[tuple[int, int], str] = {}  # (partition, offset) -> reason
    offsets = dict.fromkeys(range(partitions), 0)
    valid_ids: set[str] = set()
    started = time.perf_counter()
    per_burst = total // bursts
    ticks = 0
    for burst in range(bursts):
        by_partition: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        for i in range(burst * per_burst, (burst + 1) * per_burst):
            partition = i % partitions
            if i in bad:
                payload, reason = _invalid(i, i % 4)
                expected_dead[(partition, offsets[partition])] = reason
            else:
                payload = json.dumps(_valid(i, sentences)).encode()
                valid_ids.add(f"msg-{i}")
            by_partition[partition].append(payload)
            offsets[partition] += 1
        for partition, values in by_partition.items():
            kafka_broker.produce(topic, values, partition=partition)
        while True:  # drain what this burst added: ticks until one requests nothing
            outcome = pipeline.tick(sensor)
            ticks += 1
            assert outcome.failed == [], outcome.failed
            if not outcome.requests:
                break
    seconds = time.perf_counter() - started
    assert ticks >= 2 * bursts  # six ranges a burst, four runs a tick: cut across ticks

    predictions = pipeline.predictions()
    assert predictions.height == len(valid_ids) == total - len(bad)
    assert predictions["doc_id"].n_unique() == predictions.height
    assert set(predictions["doc_id"]) == {doc_id_for(topic, i, "") for i in valid_ids}
    english = predictions.filter(pl.col("lang") == "en")
    assert english.height > 0.95 * predictions.height
    assert english["sentiment_label"].null_count() == 0

    dlq = _dead_letters(kafka_broker, topic)
    assert len(dlq) == len(expected_dead)  # no run failed: each dead letter sent once
    reasons = {key: reason for key, reason, _offset in dlq}
    assert set(reasons) == {f"{topic}/{p}/{o}" for p, o in expected_dead}
    for (partition, offset), reason in expected_dead.items():
        assert reasons[f"{topic}/{partition}/{offset}"].startswith(reason)
    dead_rows = pipeline.lake.read_quarantine("kafka", DAY)
    assert dead_rows.height == len(expected_dead) == dead_rows["location"].n_unique()
    assert pipeline.lake.read_quarantine("raw_text", DAY).height == 0
    assert json.loads(pipeline.cursor)["offsets"] == {str(p): o for p, o in offsets.items()}
    print(  # the figure the issue asks for (pytest -s shows it)
        f"\n{total} messages, {len(pipeline.lake.part_names('raw_text', DAY))} runs, {ticks} ticks: "
        f"{seconds:.0f} s produce-to-predictions"
    )
