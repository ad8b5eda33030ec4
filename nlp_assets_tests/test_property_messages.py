"""Property-based tests of Kafka message validation (hypothesis): whatever arrives, each message
is a landing record or a dead letter, exactly once, with a reason; nothing raises; what is
accepted lands and reads back with the same doc_id.

Generated messages mix valid records with hostile ones: nesting deeper than the parser goes,
integers of thousands of digits, timestamps that overflow, NUL, lone surrogates, invalid UTF-8,
JSON that is not an object, oversized, empty and whitespace-only text. The number of examples
comes from the hypothesis profile (`ci` under CI, see conftest.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nlp_assets.kafka.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HEADER_TRUNCATED,
    KafkaRecord,
    dead_letter_frame,
    dead_letter_message,
    landing_jsonl,
    split_messages,
)
from nlp_assets.kernels.ingest import doc_id_for, normalise_record, read_landing_files
from nlp_assets.kernels.quarantine import RAW_MAX_BYTES

TOPIC = "prop.topic"
DAY = date(2026, 11, 25)
DLQ_MAX_BYTES = 20_000  # small, so generated messages are cut too

# A message is built from its offset, so every record that can be accepted has its own id.
Build = Callable[[int], bytes | None]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
texts = st.text(min_size=1, max_size=200).filter(str.strip)
timestamps = (
    st.none()
    | st.integers(0, 2_000_000_000_000)
    | st.datetimes().map(lambda d: d.isoformat())
    | st.sampled_from([1e300, -1e300, 10**20, -(10**20), "99999-12-31T00:00:00", "yesterday"])
)


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def valid_records(draw: st.DrawFn) -> Build:
    body: dict[str, Any] = {"text": draw(texts)}
    if draw(st.booleans()):
        body["source"] = draw(st.sampled_from(["app", "web", TOPIC]))
    if draw(st.booleans()):
        body["priority"] = draw(st.integers(-5, 5))
    if draw(st.booleans()):
        body["metadata"] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
    int_id = draw(st.booleans())
    return lambda off: _dumps({**body, "id": off if int_id else f"m{off}"})


def _deep(depth: int) -> Build:
    inner = b"[" * depth + b"]" * depth
    return lambda off: b'{"id": "m%d", "text": "deep", "metadata": {"a": %s}}' % (off, inner)


def _huge_int(digits: int, where: str) -> Build:
    number = b"9" * digits
    if where == "id":
        return lambda off: b'{"id": %d%s, "text": "huge id"}' % (off + 1, number)
    return lambda off: b'{"id": "m%d", "text": "huge", "metadata": {"n": %s}}' % (off, number)


def _with_text(text_json: bytes) -> Build:
    return lambda off: b'{"id": "m%d", "text": %s}' % (off, text_json)


def _constant(value: bytes | None) -> Build:
    return lambda _off: value


hostile = st.one_of(
    st.integers(500, 30_000).map(_deep),
    st.builds(_huge_int, st.integers(1_000, 6_000), st.sampled_from(["id", "metadata"])),
    timestamps.map(lambda ts: lambda off: _dumps({"id": f"m{off}", "text": "t", "timestamp": ts})),
    st.sampled_from([b'"a\\u0000b"', b'"\\u0000"', b'"lone \\ud800"', b'"\\udfff x"']).map(
        _with_text
    ),
    st.sampled_from([b'"   "', b'""', b'"\\t\\n\\r "', b'"\\u3000"', b"null", b"5", b"[]"]).map(
        _with_text
    ),
    st.binary(max_size=64).map(_constant),  # mostly invalid UTF-8 or not JSON
    st.sampled_from([None, b"", b"  \n", b"\xed\xa0\x80", b'{"id": 1, "text": "\xff"}']).map(
        _constant
    ),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: _constant(_dumps(v))),
    st.integers(DEFAULT_MAX_MESSAGE_BYTES - 20, 3 * DEFAULT_MAX_MESSAGE_BYTES).map(
        lambda n: lambda off: _dumps({"id": f"m{off}", "text": "x" * n})
    ),
    st.dictionaries(st.sampled_from(["id", "text", "source", "metadata"]), json_values).map(
        lambda d: _constant(_dumps(d))  # any shape, under the contract's field names
    ),
)
messages = st.lists(
    st.tuples(valid_records() | hostile, st.none() | st.integers(0, 2**63 - 1)), max_size=8
)


def _build(generated: list[tuple[Build, int | None]]) -> list[KafkaRecord]:
    return [
        KafkaRecord(TOPIC, 0, offset, build(offset), key=None, timestamp_ms=stamp)
        for offset, (build, stamp) in enumerate(generated)
    ]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_every_message_is_a_record_or_a_dead_letter_exactly_once(generated):
    batch = _build(generated)

    split = split_messages(batch)  # must not raise, whatever arrived

    landed = [int(r["metadata"]["kafka"].rsplit("/", 1)[1]) for r in split.records]
    dead = [message.offset for message, _reason in split.dead_letters]
    assert sorted(landed + dead) == [m.offset for m in batch]
    assert all(isinstance(reason, str) and reason.strip() for _m, reason in split.dead_letters)
    for _message, reason in split.dead_letters:
        event(f"dead letter: {reason.split(':')[0][:40]}")  # --hypothesis-show-statistics

    frame = dead_letter_frame(split.dead_letters, day=DAY, landing_file="f")
    assert frame["location"].to_list() == [m.coordinates for m, _r in split.dead_letters]
    assert frame["reason"].to_list() == [reason for _m, reason in split.dead_letters]
    for row, (message, _reason) in zip(
        frame.iter_rows(named=True), split.dead_letters, strict=True
    ):
        if message.value is None:
            assert row["raw"] is None
        else:  # the bytes as they arrived, whole up to the cap
            assert row["raw"] == message.value[:RAW_MAX_BYTES]
            assert row["raw_size"] == len(message.value)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_accepted_records_land_and_read_back_with_the_same_doc_id(generated):
    split = split_messages(_build(generated))
    expected = []
    for record in split.records:
        row = normalise_record(record, default_source=TOPIC)
        expected.append(doc_id_for(row["source"], row["source_id"], row["text"]))

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / DAY.isoformat() / "kafka" / "part.jsonl"
        path.parent.mkdir(parents=True)
        path.write_bytes(landing_jsonl(split.records))  # must not raise for what was accepted
        parsed = read_landing_files([path], day=DAY, root=root)

    assert parsed.quarantine.height == 0, parsed.quarantine["reason"].to_list()
    assert parsed.docs["doc_id"].to_list() == expected


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.text(min_size=1, max_size=3_000))
def test_every_dead_letter_copy_fits_the_broker_limit(generated, reason):
    for message in _build(generated):
        copy = dead_letter_message(
            message, reason, max_bytes=DLQ_MAX_BYTES, quarantine="/lake/q/part.parquet"
        )
        size = (
            len(copy.key) + len(copy.value or b"") + sum(len(k) + len(v) for k, v in copy.headers)
        )
        assert size <= DLQ_MAX_BYTES
        if message.value is not None:
            assert message.value.startswith(copy.value)
            truncated = dict(copy.headers).get(HEADER_TRUNCATED) == b"1"
            assert truncated == (len(copy.value) < len(message.value))
