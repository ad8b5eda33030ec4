"""The Kafka sensor's consumer lag reaches a real Pushgateway (real broker, real sensor tick)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from dev.kafka_drain import evaluate_tick
from nlp_assets import metrics
from nlp_assets.checks import all_checks
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kafka.planner import TopicSettings
from nlp_assets.kafka.resource import KafkaResource
from nlp_assets.kafka.sensors import build_kafka_sensor, sensor_name
from nlp_assets_tests.kafka_broker import Broker
from nlp_assets_tests.services import pushgateway, scrape, series

pytestmark = [pytest.mark.kafka, pytest.mark.metrics]


def test_a_tick_pushes_the_topic_lag(kafka_broker: Broker, tmp_path: Path, monkeypatch) -> None:
    topic = kafka_broker.create_topic("lagmetric", partitions=2)
    kafka_broker.produce(topic, [{"id": f"m{i}", "text": f"m {i}"} for i in range(7)], partition=0)
    kafka_broker.produce(topic, [{"id": f"n{i}", "text": f"n {i}"} for i in range(5)], partition=1)
    # one run of at most 4 messages a tick: 12 - 4 = 8 messages still behind
    config = replace(TopicSettings.from_env(topic), max_messages_per_run=4, max_runs_per_tick=1)
    sensor = build_kafka_sensor(config, today=lambda: "2026-11-25")
    definitions = dg.Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=[daily_pipeline_job],
        sensors=[sensor],
        resources={
            **build_resources(lake_dir=str(tmp_path / "lake"), landing_dir=str(tmp_path)),
            "kafka": KafkaResource(bootstrap_servers=kafka_broker.bootstrap, timeout_s=3),
        },
    )
    with pushgateway(tmp_path) as gateway, dg.instance_for_test() as instance:
        monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, gateway)
        result = evaluate_tick(sensor, instance=instance, cursor=None, definitions=definitions)
        [observation] = result.observations
        lag = observation.metadata["consumer_lag"]
        samples = scrape(gateway)
    assert len(result.requests) == 1
    assert getattr(lag, "value", lag) == 8  # what this tick left for later ticks
    group = {
        "job": sensor_name(topic),
        "asset": f"kafka/{topic}",
        "partition": "none",
        "topic": topic,
    }
    assert series(samples, metrics.CONSUMER_LAG, topic=topic) == {frozenset(group.items()): 8.0}
