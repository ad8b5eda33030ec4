"""The Kafka kernels (message validation, dead letters, offset-range planning) as unit tests,
and the raw stage's Kafka path against the real broker (marker `kafka`): oversized messages,
an unreachable dead-letter topic and dead-letter mode never fail a range."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from confluent_kafka import Producer

from nlp_assets import settings
from nlp_assets.definitions import all_assets, build_resources, defs
from nlp_assets.kafka import messages as messages_kernel
from nlp_assets.kafka.messages import (
    HEADER_ORIGINAL_BYTES,
    HEADER_QUARANTINE,
    HEADER_REASON,
    HEADER_TRUNCATED,
    MODE_DEAD_LETTER,
    TAG_ATTEMPT,
    TAG_FAILURE,
    TAG_MODE,
    KafkaRecord,
    MessageError,
    OffsetRange,
    dead_letter_frame,
    dead_letter_headers,
    dead_letter_message,
    landing_jsonl,
    split_messages,
    validate_message,
)
from nlp_assets.kafka.planner import TopicCursor, plan_ranges
from nlp_assets.kafka.resource import KafkaResource, kafka_from_env
from nlp_assets.kafka.sensors import sensor_name
from nlp_assets.kernels.ingest import RecordError, doc_id_for, normalise_record, read_landing_files
from nlp_assets.lake import _PART_NAME, Lake
from nlp_assets.resources.lake import PART_TAG
from nlp_assets_tests.kafka_broker import Broker, free_port

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
        (b'{"id": " ", "text": null}', "missing required field(s): id, text"),
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


def test_an_absurd_broker_timestamp_is_ignored_and_the_message_still_lands(tmp_path: Path):
    """The producer sets a message's timestamp: microseconds by mistake must not lose it."""
    value = b'{"id": 1, "text": "fine"}'
    split = split_messages([KafkaRecord(TOPIC, 0, 4, value, timestamp_ms=1_722_082_021_420_000)])
    assert split.dead_letters == [] and "timestamp" not in split.records[0]
    path = tmp_path / "2026-11-25" / "kafka" / "part.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(landing_jsonl(split.records))
    parsed = read_landing_files([path], day=date(2026, 11, 25), root=tmp_path)
    assert parsed.docs["source_id"].to_list() == ["1"] and parsed.quarantine.height == 0


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


def _deep(depth: int) -> bytes:
    return b'{"id": 1, "text": "x", "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


@pytest.mark.parametrize(
    ("value", "error_class"),
    [
        (_deep(30_000), "RecursionError"),  # 60 kB: under the byte cap, over the parser's depth
        (b'{"id": ' + b"9" * 5_000 + b', "text": "x"}', "ValueError"),  # int over 4300 digits
        (b'{"id": 1, "text": "lone \\ud800 surrogate"}', "UnicodeEncodeError"),
        (b'{"id": 1, "text": "x", "metadata": {"v": 1e400}}', "ValueError"),  # inf: not JSON
        (b'{"id": 1, "text": "x", "metadata": {"v": NaN}}', "ValueError"),
    ],
)
def test_messages_that_break_the_parser_are_dead_letters_naming_the_error(value, error_class):
    with pytest.raises(MessageError, match=error_class):
        validate_message(value, topic=TOPIC)
    split = split_messages(
        [_msg({"id": 1, "text": "before"}, 0), _msg(value, 1), _msg({"id": 2, "text": "after"}, 2)]
    )
    assert [r["id"] for r in split.records] == [1, 2]
    ((dead, reason),) = split.dead_letters
    assert dead.offset == 1 and error_class in reason
    landing_jsonl(split.records)  # what passed lands


def test_any_error_of_the_normaliser_is_the_message_reason_not_the_range_failure(
    monkeypatch: pytest.MonkeyPatch,
):
    def explode(record: Any, *, default_source: str) -> dict[str, Any]:
        if record.get("id") == 2:
            raise OverflowError("date value out of range")
        return normalise_record(record, default_source=default_source)

    monkeypatch.setattr(messages_kernel, "normalise_record", explode)
    split = split_messages([_msg({"id": i, "text": f"t{i}"}, offset=i) for i in range(4)])
    assert [r["id"] for r in split.records] == [0, 1, 3]
    assert [(m.offset, reason) for m, reason in split.dead_letters] == [
        (2, "OverflowError: date value out of range")
    ]


def test_a_whitespace_only_text_is_a_dead_letter_with_the_normalisers_reason():
    """One contract for message validation and landing files: the normaliser decides."""
    with pytest.raises(RecordError) as refused:
        normalise_record({"id": 1, "text": " \t\n "}, default_source=TOPIC)
    for value in (b'{"id": 1, "text": " \\t\\n "}', b'{"id": 1, "text": ""}'):
        split = split_messages([_msg(value, offset=3)])
        assert split.records == []
        ((_message, reason),) = split.dead_letters
        assert reason == str(refused.value)


def test_dead_letter_rows_keep_the_raw_bytes_whole():
    big = b'{"id": 1, "text": "' + b"x" * 2_000_000 + b'"}'
    invalid = b"\xff\xfe not utf-8"
    dead = [
        (_msg(big, 0), "oversized"),
        (_msg(invalid, 1), "not valid UTF-8"),
        (_msg(None, 2), "empty message"),
    ]
    frame = dead_letter_frame(dead, day=date(2026, 11, 25), landing_file="f")
    assert frame["raw"].to_list() == [big, invalid, None]
    assert frame["raw_size"].to_list() == [len(big), len(invalid), None]
    assert frame["payload"][1] == "\ufffd\ufffd not utf-8"


def test_a_dead_letter_copy_fits_the_broker_and_points_at_the_quarantine_row():
    big = _msg(b'{"id": 1, "text": "' + b"x" * 2_000_000 + b'"}', offset=9)
    where = "/lake/quarantine/kafka?ingest_date=2026-11-25&part=kafka-reviews.en-p0-0-10"
    copy = dead_letter_message(big, "oversized", max_bytes=100_000, quarantine=where)
    headers = dict(copy.headers)
    size = len(copy.key) + len(copy.value) + sum(len(k) + len(v) for k, v in copy.headers)
    assert size <= 100_000 and big.value.startswith(copy.value) and len(copy.value) > 90_000
    assert headers[HEADER_TRUNCATED] == b"1"
    assert headers[HEADER_ORIGINAL_BYTES] == str(len(big.value)).encode()
    assert headers[HEADER_QUARANTINE] == f"{where}#{TOPIC}/0/9".encode()
    assert copy.key == f"{TOPIC}/0/9".encode()

    small = _msg(b"oops", offset=10)
    whole = dead_letter_message(small, "invalid JSON", max_bytes=100_000, quarantine=where)
    assert whole.value == b"oops" and HEADER_TRUNCATED not in dict(whole.headers)
    long_reason = dead_letter_message(small, "r" * 500_000, max_bytes=100_000, quarantine=where)
    assert len(dict(long_reason.headers)[HEADER_REASON]) <= 1_024


def test_dead_letters_to_an_unreachable_broker_are_reported_not_raised():
    kafka = KafkaResource(
        bootstrap_servers=f"127.0.0.1:{free_port()}", timeout_s=1, dlq_delivery_timeout_s=1
    )
    delivery = kafka.send_dead_letters(
        [(_msg(b"oops", offset=1), "invalid JSON"), (_msg(None, offset=2), "empty message")],
        quarantine="/lake/q.parquet",
    )
    assert (delivery.sent, delivery.unsent) == (0, 2)
    assert delivery.errors


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
    assert json.loads(cursor.to_json()) == {
        "generation": 2,
        "offsets": {"0": 12, "3": 7},
        "topic_id": None,
        "outstanding": [],
        "day_refreshed": {},
        "days_stale": [],
    }
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


# the raw stage's Kafka path against the real broker ------------------------------------------
DAY = "2026-11-25"


def _produce_large(broker: Broker, topic: str, values: list[bytes]) -> None:
    """Like `Broker.produce`, with the producer's size limit raised so a 2 MB message goes in
    (a producer can be configured so; the pipeline's dead-letter producer is not)."""
    producer = Producer(broker.producer_config | {"message.max.bytes": 8_000_000})
    failures: list[str] = []
    for value in values:
        producer.produce(
            topic, value, partition=0, on_delivery=lambda e, _m: e and failures.append(str(e))
        )
        producer.poll(0)
    assert producer.flush(60) == 0 and failures == []


def _run_raw_text(
    root: Path, kafka: KafkaResource, offsets: OffsetRange, **tags: str
) -> dg.ExecuteInProcessResult:
    """The raw stage (and cleaning after it) of one micro-batch run, as the sensor tags it."""
    resources = {
        **build_resources(
            lake_dir=str(root / "lake"),
            landing_dir=str(root / "landing"),
            reports_dir=str(root / "reports"),
        ),
        "kafka": kafka,
    }
    with dg.instance_for_test() as instance:
        return dg.materialize(
            all_assets,
            selection=["raw_text", "cleaned_text"],
            partition_key=DAY,
            instance=instance,
            resources=resources,
            tags={**offsets.tags(), PART_TAG: offsets.part, **tags},
        )


def _dlq(broker: Broker, topic: str) -> list[tuple[str, bytes, dict[str, bytes]]]:
    return [
        (m.key().decode(), m.value(), dict(m.headers() or []))
        for m in broker.read_all(f"{topic}.dlq", idle_s=2.0)
    ]


@pytest.mark.kafka
def test_a_2mb_message_is_quarantined_whole_and_its_dlq_copy_truncated_while_the_range_lands(
    kafka_broker: Broker, tmp_path: Path
):
    topic = kafka_broker.create_topic("large")
    big = json.dumps({"id": "big", "text": "y" * 2_000_000}).encode()
    values = [json.dumps({"id": f"ok-{i}", "text": f"fine message {i}"}).encode() for i in range(3)]
    _produce_large(kafka_broker, topic, [values[0], big, values[1], values[2]])
    offsets = OffsetRange(topic, 0, 0, 4)
    kafka = KafkaResource(bootstrap_servers=kafka_broker.bootstrap)

    result = _run_raw_text(tmp_path, kafka, offsets)

    assert result.success
    lake = Lake(tmp_path / "lake")
    raw = lake.read_part("raw_text", DAY, offsets.part)
    assert sorted(raw["source_id"]) == ["ok-0", "ok-1", "ok-2"]
    (row,) = lake.read_quarantine("kafka", DAY).iter_rows(named=True)
    assert row["location"] == f"{topic}/0/1" and row["reason"].startswith("oversized")
    assert row["raw"] == big and row["raw_size"] == len(big)

    ((key, value, headers),) = _dlq(kafka_broker, topic)
    assert key == f"{topic}/0/1" and headers[HEADER_REASON].startswith(b"oversized")
    assert headers[HEADER_TRUNCATED] == b"1"
    assert headers[HEADER_ORIGINAL_BYTES] == str(len(big)).encode()
    assert 500_000 < len(value) < 1_000_000 and big.startswith(value)
    # the DLQ copy names the lake table, day, part and row that hold the whole payload
    table = lake.table_uri("quarantine/kafka")
    part = f"{table}?ingest_date={DAY}&part={offsets.part}"
    assert headers[HEADER_QUARANTINE].decode() == f"{part}#{topic}/0/1"
    pointed = lake.read_part("quarantine/kafka", DAY, offsets.part)
    assert pointed.filter(pl.col("location") == f"{topic}/0/1")["raw"].to_list() == [big]
    materialised = result.asset_materializations_for_node("raw_text")[0].metadata
    assert materialised["dlq_messages"].value == 1 and materialised["dlq_unsent"].value == 0


@pytest.mark.kafka
def test_a_dead_letter_topic_that_refuses_never_fails_the_range(
    kafka_broker: Broker, tmp_path: Path
):
    topic = kafka_broker.create_topic("nodlq", with_dlq=False)
    kafka_broker.produce(
        topic, [{"id": "a", "text": "fine"}, b"{broken", {"id": "b", "text": "ok"}]
    )
    offsets = OffsetRange(topic, 0, 0, 3)
    # the DLQ name is one the broker refuses (invalid characters): every send fails
    kafka = KafkaResource(
        bootstrap_servers=kafka_broker.bootstrap,
        dead_letter_suffix="/dlq?",
        timeout_s=3,
        dlq_delivery_timeout_s=3,
    )

    result = _run_raw_text(tmp_path, kafka, offsets)

    assert result.success
    lake = Lake(tmp_path / "lake")
    assert sorted(lake.read_part("raw_text", DAY, offsets.part)["source_id"]) == ["a", "b"]
    (row,) = lake.read_quarantine("kafka", DAY).iter_rows(named=True)
    assert row["location"] == f"{topic}/0/1" and row["raw"] == b"{broken"
    materialised = result.asset_materializations_for_node("raw_text")[0].metadata
    assert materialised["dlq_messages"].value == 0 and materialised["dlq_unsent"].value == 1


@pytest.mark.kafka
def test_dead_letter_mode_sends_every_message_of_the_range_to_the_dlq_and_lands_nothing(
    kafka_broker: Broker, tmp_path: Path
):
    topic = kafka_broker.create_topic("deadmode")
    payloads = [json.dumps({"id": f"m{i}", "text": f"message {i}"}).encode() for i in range(4)]
    payloads.insert(2, b"{broken")
    kafka_broker.produce(topic, payloads, partition=0)
    offsets = OffsetRange(topic, 0, 0, 5)
    kafka = KafkaResource(bootstrap_servers=kafka_broker.bootstrap)
    lake = Lake(tmp_path / "lake")
    landing_file = tmp_path / "landing" / DAY / "kafka" / f"{offsets.part}.jsonl"

    assert _run_raw_text(tmp_path, kafka, offsets).success  # an earlier attempt landed 4
    assert lake.read_part("raw_text", DAY, offsets.part).height == 4
    assert len(landing_file.read_text().splitlines()) == 4

    failure = "predictions: simulated crash\nTraceback ..."
    result = _run_raw_text(
        tmp_path,
        kafka,
        offsets,
        **{TAG_MODE: MODE_DEAD_LETTER, TAG_FAILURE: failure, TAG_ATTEMPT: "4"},
    )

    assert result.success
    reason = f"range failed after 3 attempts: {failure}"
    assert lake.read_part("raw_text", DAY, offsets.part).height == 0
    assert lake.read_part("cleaned_text", DAY, offsets.part).height == 0
    assert landing_file.read_bytes() == b""  # a backfill of the day does not bring them back
    quarantined = lake.read_quarantine("kafka", DAY).sort("location")
    assert quarantined["location"].to_list() == [f"{topic}/0/{i}" for i in range(5)]
    assert set(quarantined["reason"]) == {reason}
    assert quarantined["raw"].to_list() == payloads
    by_reason = [
        (k, v) for k, v, h in _dlq(kafka_broker, topic) if h[HEADER_REASON] == reason.encode()
    ]
    assert sorted(by_reason) == sorted(
        (f"{topic}/0/{i}", payload) for i, payload in enumerate(payloads)
    )
