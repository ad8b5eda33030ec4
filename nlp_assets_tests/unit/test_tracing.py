"""Trace context on the data path: what a document carries, what is refused, when traces are on.

The spans themselves are tested against a real OTLP receiver (nlp_assets_tests/test_tracing*.py).
"""

from __future__ import annotations

import json

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from nlp_assets import tracing
from nlp_assets.kafka.messages import (
    HEADER_TRACEPARENT,
    KafkaRecord,
    dead_letter_headers,
    split_messages,
)
from nlp_assets.kernels.clean import clean_documents
from nlp_assets.kernels.ingest import normalise_record

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEX = "0123456789abcdef"


def test_traces_are_on_only_with_an_endpoint_and_not_disabled():
    assert not tracing.enabled({})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1"})
    assert not tracing.enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "TRUE"}
    )


def test_with_traces_off_a_span_records_nothing_and_links_nothing():
    assert not tracing.enabled()  # the test environment sets no endpoint
    with tracing.span("anything", {"nlp.rows": 3}) as span:
        assert not span.is_recording()
        assert tracing.current_traceparent() is None
        assert tracing.link_documents([VALID]) == 0
    assert tracing.run_tags() == {}


@given(st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.hex()))
def test_any_text_parses_as_a_traceparent_or_as_none_never_an_error(value: str):
    parsed = tracing.parse_traceparent(value)
    if parsed is not None:
        assert tracing.format_traceparent(parsed) == value


@given(
    st.text(HEX, min_size=32, max_size=32),
    st.text(HEX, min_size=16, max_size=16),
    st.sampled_from(["00", "01"]),
)
def test_a_valid_traceparent_round_trips_unless_an_id_is_all_zero(
    trace_id: str, span_id: str, flags: str
):
    value = f"00-{trace_id}-{span_id}-{flags}"
    parsed = tracing.parse_traceparent(value)
    if set(trace_id) == {"0"} or set(span_id) == {"0"}:
        assert parsed is None  # W3C: all-zero ids are invalid
        return
    assert parsed is not None and tracing.format_traceparent(parsed) == value
    assert tracing.trace_id_of(value) == trace_id


def test_a_run_without_a_tick_span_is_one_trace_named_by_its_run_id():
    run_id = "6f1c2b0e-9a57-4c3e-8d2f-0a1b2c3d4e5f"
    first = tracing.run_parent({}, run_id)
    again = tracing.run_parent({}, run_id)
    from opentelemetry import trace

    a = trace.get_current_span(first).get_span_context()
    b = trace.get_current_span(again).get_span_context()
    assert (a.trace_id, a.span_id) == (b.trace_id, b.span_id)  # every step process agrees
    assert trace.format_trace_id(a.trace_id) == run_id.replace("-", "")
    tagged = tracing.run_parent({tracing.TRACEPARENT_TAG: VALID}, run_id)
    c = trace.get_current_span(tagged).get_span_context()
    assert tracing.format_traceparent(c) == VALID


def _message(value: dict, headers: tuple[tuple[str, bytes], ...] = ()) -> KafkaRecord:
    return KafkaRecord("t", 0, 7, json.dumps(value).encode(), headers=headers)


def test_a_kafka_messages_traceparent_header_becomes_its_landing_records_field():
    other = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    split = split_messages(
        [
            _message({"id": 1, "text": "Great."}, ((HEADER_TRACEPARENT, VALID.encode()),)),
            # the header wins over a field in the body
            _message(
                {"id": 2, "text": "Bad.", "traceparent": other},
                ((HEADER_TRACEPARENT, VALID.encode()),),
            ),
            _message({"id": 3, "text": "Fine.", "traceparent": other}),
            _message({"id": 4, "text": "Odd."}, ((HEADER_TRACEPARENT, b"00-zz-bad-01"),)),
            _message({"id": 5, "text": "Odd."}, ((HEADER_TRACEPARENT, b"\xff\xfe"),)),
        ]
    )
    assert split.dead_letters == []  # a trace context never refuses a message
    rows = [normalise_record(r, default_source="t") for r in split.records]
    assert [r["traceparent"] for r in rows] == [VALID, VALID, other, None, None]


def test_a_dead_letter_keeps_the_trace_context_it_came_with():
    message = _message({"id": 1}, ((HEADER_TRACEPARENT, VALID.encode()),))
    headers = dict(dead_letter_headers(message, "missing text"))
    assert headers[HEADER_TRACEPARENT] == VALID.encode()
    assert HEADER_TRACEPARENT not in dict(dead_letter_headers(_message({"id": 1}), "x"))


@given(st.one_of(st.none(), st.integers(), st.text(max_size=60), st.lists(st.integers())))
def test_a_landing_records_traceparent_field_is_kept_when_valid_and_dropped_otherwise(value):
    row = normalise_record({"text": "Some text.", "traceparent": value}, default_source="f")
    expected = value if isinstance(value, str) and tracing.parse_traceparent(value) else None
    assert row["traceparent"] == expected
    assert "traceparent" not in (row["metadata"] or "")  # a known field, not an extra


def test_cleaning_keeps_each_documents_traceparent_and_a_table_before_traces_gives_null():
    from datetime import date

    raw = pl.DataFrame(
        {
            "doc_id": ["a" * 16, "b" * 16],
            "source": ["s", "s"],
            "ingest_date": [date(2026, 12, 1)] * 2,
            "file": ["f", "f"],
            "text": ["The first document is long enough.", "The second one is long enough."],
            "traceparent": [VALID, None],
        }
    )
    cleaned = clean_documents(raw, date(2026, 12, 1)).docs.sort("doc_id")
    assert cleaned["traceparent"].to_list() == [VALID, None]
    before = clean_documents(raw.drop("traceparent"), date(2026, 12, 1)).docs
    assert before["traceparent"].to_list() == [None, None]
