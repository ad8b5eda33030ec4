"""Unit tests of the Kafka kernels: message validation and offset-range planning (no broker)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets import settings
from nlp_assets.definitions import defs
from nlp_assets.kernels.ingest import doc_id_for, read_landing_files
from nlp_assets.kernels.messages import (
    KafkaRecord,
    MessageError,
    OffsetRange,
    TopicCursor,
    dead_letter_frame,
    dead_letter_headers,
    landing_jsonl,
    plan_ranges,
    split_messages,
    validate_message,
)
from nlp_assets.lake import _PART_NAME
from resources.kafka import kafka_from_env
from sensors.kafka import sensor_name

TOPIC = "reviews.en"


def _msg(value: bytes | dict | None, offset: int = 0, partition: int = 0) -> KafkaRecord:
    if isinstance(value, dict):
        value = json.dumps(value).encode()
    return KafkaRecord(topic=TOPIC, partition=partition, offset=offset, value=value)


# validation ----------------------------------------------------------------------------------
def test_a_valid_message_keeps_its_fields_and_takes_the_topic_as_source():
    record = validate_message(
        b'{"id": 7, "text": "Great phone", "priority": 2, "timestamp": "2026-11-25T10:00:00"}',
        topic=TOPIC,
    )
    assert record == {
        "id": 7,
        "text": "Great phone",
        "priority": 2,
        "timestamp": "2026-11-25T10:00:00",
        "source": TOPIC,
    }
    explicit = validate_message(b'{"id": "a", "text": "x", "source": "app"}', topic=TOPIC)
    assert explicit["source"] == "app"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message"),
        (b"   ", "empty message"),
        (b"{not json", "invalid JSON: Expecting property name enclosed in double quotes"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'["id", "text"]', "message must be a JSON object, got list"),
        (b'{"text": "no id"}', "missing required field(s): id"),
        (b'{"id": 1}', "missing required field(s): text"),
        (b'{"id": "", "text": ""}', "missing required field(s): id, text"),
        (b'{"id": 1, "text": 5}', "field 'text' must be a string, got int"),
        (b'{"id": 1, "text": "x", "priority": "high"}', "field 'priority' must be an integer"),
        (b'{"id": 1, "text": "x", "timestamp": "yesterday"}', "invalid timestamp 'yesterday'"),
        (b'{"id": 1, "text": "x", "metadata": [1]}', "field 'metadata' must be an object"),
        (b'{"id": true, "text": "x"}', "field 'id' must be a string or an integer"),
    ],
)
def test_invalid_messages_say_why(value, reason):
    with pytest.raises(MessageError) as raised:
        validate_message(value, topic=TOPIC)
    assert str(raised.value).startswith(reason)


def test_oversized_messages_are_refused_by_bytes_not_characters():
    text = "é" * 60  # 120 bytes of UTF-8
    value = json.dumps({"id": 1, "text": text}, ensure_ascii=False).encode()
    assert validate_message(value, topic=TOPIC, max_bytes=len(value))["text"] == text
    with pytest.raises(MessageError, match=rf"oversized: {len(value)} bytes, limit 100"):
        validate_message(value, topic=TOPIC, max_bytes=100)


def test_split_keeps_order_coordinates_and_every_reason():
    messages = [
        _msg({"id": 1, "text": "one", "metadata": {"lang": "en"}}, offset=10),
        _msg(b"oops", offset=11),
        _msg({"id": 2, "text": "two"}, offset=12),
        _msg(None, offset=13),
    ]
    split = split_messages(messages)
    assert [r["id"] for r in split.records] == [1, 2]
    assert split.records[0]["metadata"] == {"lang": "en", "kafka": f"{TOPIC}/0/10"}
    assert [(m.offset, reason.split(":")[0]) for m, reason in split.dead_letters] == [
        (11, "invalid JSON"),
        (13, "empty message"),
    ]
    headers = dict(dead_letter_headers(*split.dead_letters[0]))
    assert headers == {
        "nlp.dlq.reason": split.dead_letters[0][1].encode(),
        "nlp.source.topic": TOPIC.encode(),
        "nlp.source.partition": b"0",
        "nlp.source.offset": b"11",
    }
    stamped = split_messages(
        [KafkaRecord(TOPIC, 0, 5, b'{"id": 1, "text": "t"}', timestamp_ms=1_795_000_000_000)]
    )
    assert stamped.records[0]["timestamp"] == 1_795_000_000_000
    frame = dead_letter_frame(split.dead_letters, day=date(2026, 11, 25), landing_file="f")
    assert frame["location"].to_list() == [f"{TOPIC}/0/11", f"{TOPIC}/0/13"]
    assert frame["payload"].to_list() == ["oops", None]


def test_landed_messages_get_the_doc_id_a_backfill_computes(tmp_path: Path):
    """doc_id = hash(source, id): stable across ranges, retries and backfills."""
    split = split_messages(
        [_msg({"id": 41, "text": "same id"}, offset=0), _msg({"id": "x", "text": "t"}, offset=1)]
    )
    day = date(2026, 11, 25)
    path = tmp_path / day.isoformat() / "kafka" / "part.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(landing_jsonl(split.records))
    parsed = read_landing_files([path], day=day, root=tmp_path)
    assert parsed.quarantine.height == 0
    assert parsed.docs["doc_id"].to_list() == [
        doc_id_for(TOPIC, "41", "same id"),
        doc_id_for(TOPIC, "x", "t"),
    ]
    assert parsed.docs["source"].to_list() == [TOPIC, TOPIC]


# ranges ----------------------------------------------------------------------------------------
def test_range_names_tags_and_round_trip():
    offsets = OffsetRange(TOPIC, 2, 500, 1000)
    assert offsets.run_key == "reviews.en:2:500-1000"
    assert offsets.part == "kafka-reviews.en-p2-500-1000"
    assert _PART_NAME.match(offsets.part)
    assert OffsetRange.from_tags(offsets.tags()) == offsets
    assert OffsetRange.from_tags({"dagster/partition": "2026-11-25"}) is None
    later = OffsetRange(TOPIC, 2, 500, 1000, generation=1)
    assert later.run_key == "reviews.en:2:500-1000:g1" and later.part.endswith("-g1")
    with pytest.raises(ValueError, match="empty or negative"):
        OffsetRange(TOPIC, 0, 5, 5)
    with pytest.raises(ValueError, match="invalid Kafka range tags"):
        OffsetRange.from_tags({"nlp/kafka_topic": TOPIC, "nlp/kafka_partition": "x"})


def test_cursor_json_round_trip():
    cursor = TopicCursor({0: 12, 3: 7}, generation=2)
    assert json.loads(cursor.to_json()) == {"generation": 2, "offsets": {"0": 12, "3": 7}}
    assert TopicCursor.from_json(cursor.to_json()) == cursor
    assert TopicCursor.from_json(None) == TopicCursor()


def test_plan_bounds_runs_and_shares_them_across_partitions():
    plan = plan_ranges(
        TOPIC,
        TopicCursor(),
        {0: (0, 25), 1: (0, 5)},
        max_messages_per_run=10,
        max_runs=3,
    )
    assert [r.run_key for r in plan.ranges] == [
        "reviews.en:0:0-10",
        "reviews.en:1:0-5",
        "reviews.en:0:10-20",
    ]
    assert plan.cursor == TopicCursor({0: 20, 1: 5})
    assert plan.lag == {0: 5, 1: 0} and plan.total_lag == 5
    follow = plan_ranges(
        TOPIC, plan.cursor, {0: (0, 25), 1: (0, 5)}, max_messages_per_run=10, max_runs=3
    )
    assert [r.run_key for r in follow.ranges] == ["reviews.en:0:20-25"]
    idle = plan_ranges(
        TOPIC, follow.cursor, {0: (0, 25), 1: (0, 5)}, max_messages_per_run=10, max_runs=3
    )
    assert idle.ranges == [] and idle.cursor == follow.cursor and idle.total_lag == 0


def test_new_partitions_start_at_their_low_watermark():
    plan = plan_ranges(
        TOPIC, TopicCursor({0: 4}), {0: (0, 4), 1: (2, 6)}, max_messages_per_run=100, max_runs=5
    )
    assert [r.run_key for r in plan.ranges] == ["reviews.en:1:2-6"]
    assert plan.notes == [f"new partition {TOPIC}/1: reading from offset 2"]


def test_expired_messages_are_reported_not_hidden():
    plan = plan_ranges(
        TOPIC, TopicCursor({0: 3}), {0: (10, 12)}, max_messages_per_run=100, max_runs=5
    )
    assert [r.run_key for r in plan.ranges] == ["reviews.en:0:10-12"]
    assert plan.notes == [
        f"{TOPIC}/0: 7 messages expired before they were read (cursor 3, low watermark 10)"
    ]


def test_a_recreated_topic_restarts_in_a_new_generation():
    cursor = TopicCursor({0: 50, 1: 40})
    plan = plan_ranges(TOPIC, cursor, {0: (0, 8)}, max_messages_per_run=5, max_runs=5)
    assert plan.cursor == TopicCursor({0: 8}, generation=1)
    assert [r.run_key for r in plan.ranges] == ["reviews.en:0:0-5:g1", "reviews.en:0:5-8:g1"]
    assert "looks recreated" in plan.notes[0] and "partition 1 no longer exists" in plan.notes[0]
    assert "cursor 50 > high watermark 8" in plan.notes[0]


def test_a_recreated_topic_halts_under_the_halt_policy():
    cursor = TopicCursor({0: 50})
    plan = plan_ranges(
        TOPIC, cursor, {0: (0, 8)}, max_messages_per_run=5, max_runs=5, on_reset="halt"
    )
    assert plan.ranges == [] and plan.cursor == cursor
    assert plan.halted and "policy 'halt'" in plan.halted


# the code location ---------------------------------------------------------------------------
def test_each_configured_topic_has_a_sensor_and_an_external_asset_upstream_of_raw_text():
    graph = defs.resolve_asset_graph()
    topics = settings.kafka_topics()
    assert topics == [("nlp-documents", 0)]  # the default
    for topic, _priority in topics:
        sensor = defs.resolve_sensor_def(sensor_name(topic))
        assert sensor.job_name == "daily_pipeline"
        assert sensor.required_resource_keys == {"kafka"}
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
        spec = graph.get(dg.AssetKey(["kafka", topic]))
        assert not spec.is_materializable and spec.kinds == {"kafka"}
        assert dg.AssetKey(["kafka", topic]) in graph.get(dg.AssetKey("raw_text")).parent_keys


def test_topics_and_priorities_come_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NLP_KAFKA_TOPICS", "urgent:10, bulk ,reviews.en:0")
    assert settings.kafka_topics() == [("urgent", 10), ("bulk", 0), ("reviews.en", 0)]


def test_kafka_resource_config_from_env_keeps_the_password_out_of_config(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b1:9093,b2:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "pipeline")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("KAFKA_EXTRA_CONFIG", '{"client.id": "nlp"}')
    resource = kafka_from_env()
    # the resource's config names the variable; Dagster reads its value when it runs
    assert isinstance(resource.sasl_password, dg.EnvVar)
    assert resource.sasl_password == "KAFKA_SASL_PASSWORD"
    assert resource.process_config_and_initialize().client_config() == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "pipeline",
        "sasl.password": "s3cret",
        "client.id": "nlp",
    }
    monkeypatch.delenv("KAFKA_SASL_PASSWORD")
    assert "sasl.password" not in kafka_from_env().client_config()
