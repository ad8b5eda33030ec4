"""The Kafka sensor against a real broker: cursor, bounded runs, new partitions, a recreated
topic, the broker going down, lag observations and priority."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from nlp_assets.checks import all_checks
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kernels.messages import TAG_END, TAG_PARTITION, TAG_START, TAG_TOPIC
from nlp_assets_tests.kafka_broker import Broker, tansu_broker
from resources.kafka import KafkaResource
from resources.lake import PART_TAG
from sensors.kafka import build_kafka_sensor
from sensors.kafka_drain import evaluate_tick

pytestmark = pytest.mark.kafka

DAY = "2026-11-25"


def _sensor(topic: str, **kwargs) -> dg.SensorDefinition:
    kwargs.setdefault("max_messages_per_run", 10)
    kwargs.setdefault("max_runs_per_tick", 3)
    return build_kafka_sensor(topic, today=lambda: DAY, **kwargs)


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
    assert json.loads(first.cursor) == {"generation": 0, "offsets": {"0": 20, "1": 5}}
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

    idle = _tick(sensor, kafka_broker.bootstrap, second.cursor, instance)
    assert idle.requests == [] and idle.cursor == second.cursor
    assert idle.skip_reason == f"no new messages on {topic} (lag 0)"

    kafka_broker.produce(topic, _messages(3, start=200), partition=1)
    more = _tick(sensor, kafka_broker.bootstrap, idle.cursor, instance)
    assert [r.run_key for r in more.requests] == [f"{topic}:1:5-8"]


def test_partitions_missing_from_the_cursor_are_picked_up(kafka_broker: Broker, instance):
    """Tansu cannot add partitions (no CreatePartitions): a cursor written when the topic had
    one partition stands for the topic before it grew."""
    topic = kafka_broker.create_topic("grown", partitions=3)
    for partition in range(3):
        kafka_broker.produce(topic, _messages(4, start=10 * partition), partition=partition)
    old_cursor = json.dumps({"generation": 0, "offsets": {"0": 4}})
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
    assert json.loads(restarted.cursor) == {"generation": 1, "offsets": {"0": 3}}
    # the new generation's part never overwrites the old topic's part of the same offsets
    assert restarted.requests[0].tags[PART_TAG] == f"kafka-{topic}-p0-0-3-g1"


def test_a_missing_topic_skips_and_keeps_the_cursor(kafka_broker: Broker, instance):
    cursor = json.dumps({"generation": 0, "offsets": {"0": 3}})
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
