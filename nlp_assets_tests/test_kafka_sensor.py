"""The Kafka sensor against a real broker: cursor, bounded runs, new partitions, a recreated
topic, the broker going down, lag observations and priority; failed ranges re-requested with
backoff, then dead-lettered, counted in the lag meanwhile (runs really executed in a real
instance)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import (
    PARENT_RUN_ID_TAG,
    RETRY_NUMBER_TAG,
    ROOT_RUN_ID_TAG,
    RUN_KEY_TAG,
    SENSOR_NAME_TAG,
    TAGS_TO_MAYBE_OMIT_ON_RETRY,
    WILL_RETRY_TAG,
)

from dev.kafka_drain import evaluate_tick
from nlp_assets import metrics
from nlp_assets.checks import all_checks
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kafka.messages import (
    MODE_DEAD_LETTER,
    TAG_ATTEMPT,
    TAG_END,
    TAG_FAILURE,
    TAG_MODE,
    TAG_PARTITION,
    TAG_START,
    TAG_TOPIC,
)
from nlp_assets.kafka.planner import TopicCursor, TopicSettings
from nlp_assets.kafka.resource import KafkaResource
from nlp_assets.kafka.sensors import build_kafka_sensor
from nlp_assets.resources.lake import PART_TAG
from nlp_assets_tests.kafka_broker import Broker, tansu_broker

pytestmark = pytest.mark.kafka

DAY = "2026-11-25"


def _sensor(topic: str, now=time.time, **limits) -> dg.SensorDefinition:
    """The topic's sensor with the environment's settings, but 10 messages a run and 3 runs a
    tick unless `limits` say otherwise."""
    limits = {"max_messages_per_run": 10, "max_runs_per_tick": 3} | limits
    config = replace(TopicSettings.from_env(topic), **limits)
    return build_kafka_sensor(config, today=lambda: DAY, now=now)


def _messages(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"m{i}", "text": f"message number {i}"} for i in range(start, start + n)]


def _tick(sensor, broker_address: str, cursor: str | None, instance: dg.DagsterInstance):
    resources = {
        **build_resources(lake_dir="/nonexistent/lake", landing_dir="/nonexistent/landing"),
        "kafka": KafkaResource(bootstrap_servers=broker_address, timeout_s=3),
    }
    definitions = dg.Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=[daily_pipeline_job],
        sensors=[sensor],
        resources=resources,
    )
    return evaluate_tick(sensor, instance=instance, cursor=cursor, definitions=definitions)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def test_ticks_emit_bounded_ranges_and_move_the_cursor(kafka_broker: Broker, instance):
    topic = kafka_broker.create_topic("sensor", partitions=2)
    kafka_broker.produce(topic, _messages(25), partition=0)
    kafka_broker.produce(topic, _messages(5, start=100), partition=1)
    sensor = _sensor(topic, priority=7)

    first = _tick(sensor, kafka_broker.bootstrap, None, instance)
    assert [r.run_key for r in first.requests] == [
        f"{topic}:0:0-10",
        f"{topic}:1:0-5",
        f"{topic}:0:10-20",
    ]
    cursor = json.loads(first.cursor)
    assert (cursor["generation"], cursor["offsets"]) == (0, {"0": 20, "1": 5})
    # requested, not yet known to have succeeded: tracked until a run of each succeeds
    assert sorted((r["partition"], r["start"], r["end"]) for r in cursor["outstanding"]) == [
        (0, 0, 10),
        (0, 10, 20),
        (1, 0, 5),
    ]
    request = first.requests[0]
    assert request.partition_key == DAY
    assert request.tags[TAG_TOPIC] == topic
    assert (request.tags[TAG_PARTITION], request.tags[TAG_START], request.tags[TAG_END]) == (
        "0",
        "0",
        "10",
    )
    assert request.tags[PART_TAG] == f"kafka-{topic}-p0-0-10"
    assert request.tags["dagster/priority"] == "7"
    (observation,) = first.observations
    assert observation.asset_key == dg.AssetKey(["kafka", topic])
    assert observation.metadata["consumer_lag"].value == 5
    assert observation.metadata["requested_messages"].value == 25

    second = _tick(sensor, kafka_broker.bootstrap, first.cursor, instance)
    assert [r.run_key for r in second.requests] == [f"{topic}:0:20-25"]
    assert json.loads(second.cursor)["offsets"] == {"0": 25, "1": 5}
    assert second.observations[0].metadata["consumer_lag"].value == 0
    # the ranges of the first tick have no run yet (nothing launched them here): in flight
    assert second.observations[0].metadata["in_flight_messages"].value == 30

    idle = _tick(sensor, kafka_broker.bootstrap, second.cursor, instance)
    assert idle.requests == [] and idle.cursor == second.cursor
    assert idle.skip_reason == f"no new messages on {topic} (lag 0)"

    kafka_broker.produce(topic, _messages(3, start=200), partition=1)
    more = _tick(sensor, kafka_broker.bootstrap, idle.cursor, instance)
    assert [r.run_key for r in more.requests] == [f"{topic}:1:5-8"]


def test_partitions_missing_from_the_cursor_are_picked_up(kafka_broker: Broker, instance):
    """Tansu cannot add partitions (no CreatePartitions): a cursor that knows one partition
    stands for the topic before it grew."""
    topic = kafka_broker.create_topic("grown", partitions=3)
    for partition in range(3):
        kafka_broker.produce(topic, _messages(4, start=10 * partition), partition=partition)
    old_cursor = TopicCursor({0: 4}).to_json()
    outcome = _tick(_sensor(topic), kafka_broker.bootstrap, old_cursor, instance)
    assert [r.run_key for r in outcome.requests] == [f"{topic}:1:0-4", f"{topic}:2:0-4"]
    assert json.loads(outcome.cursor)["offsets"] == {"0": 4, "1": 4, "2": 4}


def test_a_recreated_topic_is_detected_and_handled_by_policy(kafka_broker: Broker, instance):
    topic = kafka_broker.create_topic("recreated", partitions=1)
    kafka_broker.produce(topic, _messages(8), partition=0)
    restart, halt = _sensor(topic), _sensor(topic, on_reset="halt")
    before = _tick(restart, kafka_broker.bootstrap, None, instance)
    assert json.loads(before.cursor)["offsets"] == {"0": 8}

    kafka_broker.recreate_topic(topic, partitions=1)
    kafka_broker.produce(topic, _messages(3, start=50), partition=0)

    halted = _tick(halt, kafka_broker.bootstrap, before.cursor, instance)
    assert halted.requests == [] and halted.cursor == before.cursor
    assert "looks recreated" in halted.skip_reason and "policy 'halt'" in halted.skip_reason

    restarted = _tick(restart, kafka_broker.bootstrap, before.cursor, instance)
    assert [r.run_key for r in restarted.requests] == [f"{topic}:0:0-3:g1"]
    cursor = json.loads(restarted.cursor)
    assert (cursor["generation"], cursor["offsets"]) == (1, {"0": 3})
    # the old topic's outstanding range is gone with its messages: only the new one is tracked
    assert [(r["generation"], r["start"], r["end"]) for r in cursor["outstanding"]] == [(1, 0, 3)]
    # the new generation's part never overwrites the old topic's part of the same offsets
    assert restarted.requests[0].tags[PART_TAG] == f"kafka-{topic}-p0-0-3-g1"


def test_a_missing_topic_skips_and_keeps_the_cursor(kafka_broker: Broker, instance):
    cursor = TopicCursor({0: 3}).to_json()
    outcome = _tick(_sensor("never-created-topic"), kafka_broker.bootstrap, cursor, instance)
    assert outcome.requests == [] and outcome.cursor == cursor
    assert outcome.skip_reason == "topic never-created-topic does not exist (yet); cursor kept"


def test_broker_down_during_a_tick_skips_it_and_keeps_the_cursor(instance):
    """Its own broker, stopped between two ticks (the session broker stays up)."""
    with tansu_broker() as (address, process):
        broker = Broker(bootstrap=address, is_tansu=True, process=process)
        topic = broker.create_topic("down", partitions=1)
        broker.produce(topic, _messages(4), partition=0)
        sensor = _sensor(topic)
        first = _tick(sensor, address, None, instance)
        assert json.loads(first.cursor)["offsets"] == {"0": 4}
        broker.produce(topic, _messages(2, start=4), partition=0)
        process.kill()
        process.wait(timeout=10)
        down = _tick(sensor, address, first.cursor, instance)
    assert down.requests == [] and down.observations == []
    assert down.cursor == first.cursor
    assert down.skip_reason.startswith(f"broker unreachable, cursor kept: {address}")


# failed ranges -------------------------------------------------------------------------------
@dg.op
def land_range() -> None:
    """Stands in for the raw stage of a micro-batch run (the real one needs the whole lake)."""


@dg.op
def crash_in_raw_stage() -> None:
    raise RuntimeError("disk full while landing the range\nsecond line of the traceback")


@dg.job(executor_def=dg.in_process_executor)
def ok_range_job() -> None:
    land_range()


@dg.job(executor_def=dg.in_process_executor)
def failing_range_job() -> None:
    crash_in_raw_stage()


def _run(
    job: dg.JobDefinition, request: dg.RunRequest, sensor, instance: dg.DagsterInstance
) -> dg.DagsterRun:
    """A real run of the request, tagged as the daemon tags a sensor's run."""
    tags = {**request.tags, RUN_KEY_TAG: request.run_key, SENSOR_NAME_TAG: sensor.name}
    result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    return instance.get_run_by_id(result.run_id)


def _ended(instance: dg.DagsterInstance, run: dg.DagsterRun) -> float:
    (record,) = instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id]))
    return record.end_time


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _lag(outcome) -> int:
    return outcome.observations[0].metadata["consumer_lag"].value


def _failed_ranges(outcome) -> list[dict]:
    return outcome.observations[0].metadata["failed_ranges"].value


def _gauges(textfile: Path) -> dict[str, float]:
    """The Kafka samples of the sensor's textfile export (one series each)."""
    samples = {}
    for line in textfile.read_text().splitlines():
        if line.startswith("nlp_kafka_"):
            name, value = line.split("{")[0], line.rsplit(" ", 1)[1]
            samples[name] = float(value)
    return samples


def test_a_failed_range_is_re_requested_with_backoff_then_dead_lettered(
    kafka_broker: Broker, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(metrics.TEXTFILE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    topic = kafka_broker.create_topic("failing", partitions=1)
    kafka_broker.produce(topic, _messages(10), partition=0)
    clock = Clock()
    sensor = _sensor(topic, now=clock, max_range_attempts=2, range_retry_backoff_s=60)
    broker = kafka_broker.bootstrap

    first = _tick(sensor, broker, None, instance)
    [request] = first.requests
    assert (request.run_key, request.tags[TAG_ATTEMPT]) == (f"{topic}:0:0-10", "1")
    failed = _run(failing_range_job, request, sensor, instance)
    assert failed.status == dg.DagsterRunStatus.FAILURE

    # failed for good (no Dagster retry here): counted in the lag, listed, not yet re-requested
    clock.now = _ended(instance, failed) + 30
    waiting = _tick(sensor, broker, first.cursor, instance)
    assert waiting.requests == [] and _lag(waiting) == 10
    [listed] = _failed_ranges(waiting)
    assert listed["run_key"] == f"{topic}:0:0-10" and listed["run_id"] == failed.run_id
    assert listed["attempt"] == 1 and listed["next_attempt"] == 2
    assert "re-requested" in waiting.skip_reason and failed.run_id in waiting.skip_reason
    prom = tmp_path / f"{metrics.textfile_name(sensor.name, f'kafka/{topic}')}.prom"
    assert _gauges(prom) == {metrics.CONSUMER_LAG: 10.0, metrics.FAILED_RANGES: 1.0}

    # after the backoff (60 s from the failure): attempt 2, its own run key, the same part
    clock.now = _ended(instance, failed) + 61
    retry = _tick(sensor, broker, waiting.cursor, instance)
    [second] = retry.requests
    assert (second.run_key, second.tags[TAG_ATTEMPT]) == (f"{topic}:0:0-10:a2", "2")
    assert second.tags[PART_TAG] == request.tags[PART_TAG] and TAG_MODE not in second.tags
    assert _lag(retry) == 10
    failed_again = _run(failing_range_job, second, sensor, instance)

    # the backoff doubles; past the bound the last request is in dead-letter mode
    clock.now = _ended(instance, failed_again) + 61
    assert _tick(sensor, broker, retry.cursor, instance).requests == []
    clock.now = _ended(instance, failed_again) + 121
    last = _tick(sensor, broker, retry.cursor, instance)
    [dead] = last.requests
    assert dead.run_key == f"{topic}:0:0-10:a3" and dead.tags[TAG_ATTEMPT] == "3"
    assert dead.tags[TAG_MODE] == MODE_DEAD_LETTER
    assert dead.tags[TAG_FAILURE].startswith("RuntimeError: disk full while landing the range")
    assert "\n" not in dead.tags[TAG_FAILURE] and len(dead.tags[TAG_FAILURE]) <= 500
    assert dead.tags[PART_TAG] == request.tags[PART_TAG]
    _run(ok_range_job, dead, sensor, instance)

    # a run of the range succeeded: done, out of the cursor, lag back to 0
    clock.now += 5
    done = _tick(sensor, broker, last.cursor, instance)
    assert done.requests == [] and _lag(done) == 0 and _failed_ranges(done) == []
    assert json.loads(done.cursor)["outstanding"] == []
    assert _gauges(prom) == {metrics.CONSUMER_LAG: 0.0, metrics.FAILED_RANGES: 0.0}


def test_succeeded_ranges_leave_the_cursor_and_running_ones_stay(kafka_broker: Broker, instance):
    topic = kafka_broker.create_topic("settled", partitions=2)
    kafka_broker.produce(topic, _messages(10), partition=0)
    kafka_broker.produce(topic, _messages(4, start=50), partition=1)
    clock = Clock()
    sensor = _sensor(topic, now=clock)
    first = _tick(sensor, kafka_broker.bootstrap, None, instance)
    ran, queued = first.requests
    assert _run(ok_range_job, ran, sensor, instance).status == dg.DagsterRunStatus.SUCCESS
    # the other one is created but not started yet (a real run record, waiting)
    waiting = instance.create_run_for_job(
        ok_range_job,
        tags={**queued.tags, RUN_KEY_TAG: queued.run_key, SENSOR_NAME_TAG: sensor.name},
    )
    assert waiting.status == dg.DagsterRunStatus.NOT_STARTED
    clock.now += 3600  # long after any backoff or grace: still nothing to re-request
    later = _tick(sensor, kafka_broker.bootstrap, first.cursor, instance)
    assert later.requests == []
    [left] = json.loads(later.cursor)["outstanding"]
    assert (left["partition"], left["start"], left["end"]) == (1, 0, 4)
    assert _lag(later) == 0 and later.observations[0].metadata["in_flight_messages"].value == 4


def test_a_failed_run_that_dagster_will_retry_is_not_re_requested(kafka_broker: Broker):
    """`run_retries` on: Dagster re-launches the failed run itself (tags copied); the sensor
    waits for that retry and re-requests only when the retry failed for good."""
    with dg.instance_for_test(
        overrides={"run_retries": {"enabled": True, "max_retries": 1}}
    ) as instance:
        topic = kafka_broker.create_topic("dagster-retry", partitions=1)
        kafka_broker.produce(topic, _messages(6), partition=0)
        clock = Clock()
        sensor = _sensor(topic, now=clock, range_retry_backoff_s=60)
        first = _tick(sensor, kafka_broker.bootstrap, None, instance)
        [request] = first.requests
        failed = _run(failing_range_job, request, sensor, instance)
        assert failed.tags[WILL_RETRY_TAG] == "true"

        clock.now = _ended(instance, failed) + 120
        pending = _tick(sensor, kafka_broker.bootstrap, first.cursor, instance)
        assert pending.requests == [] and _failed_ranges(pending) == []
        assert _lag(pending) == 0

        # Dagster's retry, tagged as the retry daemon tags it (create_reexecuted_run): a
        # re-execution of the failed run with its tags, which fails too
        result = dg.execute_job(
            dg.reconstructable(_failing_range_job),
            instance=instance,
            tags={
                **{k: v for k, v in failed.tags.items() if k not in TAGS_TO_MAYBE_OMIT_ON_RETRY},
                PARENT_RUN_ID_TAG: failed.run_id,
                ROOT_RUN_ID_TAG: failed.run_id,
                RETRY_NUMBER_TAG: "1",
            },
            reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
        )
        retried = instance.get_run_by_id(result.run_id)
        assert retried.root_run_id == failed.run_id and retried.tags[WILL_RETRY_TAG] == "false"

        clock.now = _ended(instance, retried) + 61
        again = _tick(sensor, kafka_broker.bootstrap, pending.cursor, instance)
        [second] = again.requests
        assert (second.run_key, second.tags[TAG_ATTEMPT]) == (f"{topic}:0:0-6:a2", "2")
        [listed] = _failed_ranges(again)
        assert listed["run_id"] == retried.run_id


def _failing_range_job() -> dg.JobDefinition:
    return failing_range_job


def test_a_topic_recreated_past_the_cursor_is_read_from_its_start(kafka_broker: Broker, instance):
    """The new topic already holds more messages than the old cursor: only its identity (the
    Kafka topic id) tells that offsets 0.. are new messages."""
    topic = kafka_broker.create_topic("reborn", partitions=1)
    kafka_broker.produce(topic, _messages(4), partition=0)
    sensor = _sensor(topic, max_messages_per_run=5, max_runs_per_tick=5)
    before = _tick(sensor, kafka_broker.bootstrap, None, instance)
    assert json.loads(before.cursor)["offsets"] == {"0": 4}

    kafka_broker.recreate_topic(topic, partitions=1)
    kafka_broker.produce(topic, _messages(12, start=100), partition=0)
    after = _tick(sensor, kafka_broker.bootstrap, before.cursor, instance)
    assert [r.run_key for r in after.requests] == [
        f"{topic}:0:0-5:g1",
        f"{topic}:0:5-10:g1",
        f"{topic}:0:10-12:g1",
    ]
    cursor = json.loads(after.cursor)
    assert (cursor["generation"], cursor["offsets"]) == (1, {"0": 12})
    assert cursor["topic_id"] != json.loads(before.cursor)["topic_id"]


def test_micro_batches_refresh_the_day_stages_at_most_once_per_interval(
    kafka_broker: Broker, instance
):
    topic = kafka_broker.create_topic("refresh", partitions=1)
    kafka_broker.produce(topic, _messages(25), partition=0)
    clock = [1_800_000_000.0]
    sensor = _sensor(topic, day_refresh_minutes=10, now=lambda: clock[0])

    first = _tick(sensor, kafka_broker.bootstrap, None, instance)
    assert len(first.requests) == 3
    *parts_only, last = first.requests
    assert last.asset_selection is None  # the whole job: it sees the most of the day
    part_stages = {
        dg.AssetKey(k) for k in ("raw_text", "cleaned_text", "tokens", "features", "predictions")
    }
    for request in parts_only:
        assert set(request.asset_selection or []) == part_stages
        checks = set(request.asset_check_keys or [])
        assert checks and {c.asset_key for c in checks} <= part_stages
        # not the freshness checks daily_pipeline leaves out, nor the day stages' checks
        assert all(c.name != "freshness" for c in checks)

    kafka_broker.produce(topic, _messages(5, start=25), partition=0)
    clock[0] += 9 * 60
    second = _tick(sensor, kafka_broker.bootstrap, first.cursor, instance)
    # (nothing ran the first tick's ranges, so the sensor asks for them again too)
    assert second.requests
    for request in second.requests:
        assert set(request.asset_selection or []) == part_stages

    kafka_broker.produce(topic, _messages(5, start=30), partition=0)
    clock[0] += 60
    third = _tick(sensor, kafka_broker.bootstrap, second.cursor, instance)
    assert [r.asset_selection is None for r in third.requests] == [
        i == len(third.requests) - 1 for i in range(len(third.requests))
    ]
    assert json.loads(third.cursor)["day_refreshed"] == {DAY: clock[0]}
