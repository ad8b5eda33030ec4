"""The submit body's splitter (`api.submit.split_body`), tried with generated bodies: every
record of a JSON array or NDJSON comes out once, as it was sent (no text re-encoded), the record
cap holds for any count, and no body makes it raise anything but a `BodyError`."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nlp_assets.api.guard import printable
from nlp_assets.api.submit import BodyError, split_body

MAX = 20
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
spacing = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])


@given(st.lists(values, min_size=1, max_size=MAX), spacing, st.booleans())
def test_every_array_element_comes_out_once_as_sent(elements, space, ascii_only):
    body = (
        ("[" + space + ("," + space).join(json.dumps(e, ensure_ascii=ascii_only) for e in elements))
        + space
        + "]"
    )
    items = split_body(body.encode(), "application/json", max_batch=MAX)
    assert [json.loads(item) for item in items] == elements


@given(st.lists(values, min_size=MAX + 1, max_size=MAX + 5))
def test_the_record_cap_holds_for_arrays_and_ndjson(elements):
    array = json.dumps(elements).encode()
    ndjson = "\n".join(json.dumps(e) for e in elements).encode()
    for body, kind in ((array, "application/json"), (ndjson, "application/x-ndjson")):
        with pytest.raises(BodyError) as refused:
            split_body(body, kind, max_batch=MAX)
        assert refused.value.too_large


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_body_is_split_or_refused_with_a_reason(body):
    try:
        split_body(body, "application/json", max_batch=MAX)
    except BodyError as error:
        assert str(error)


def test_a_lone_surrogate_escape_reaches_validation_unchanged():
    (item,) = split_body(b'[{"id": "1", "text": "a \\ud800 b"}]', "application/json", max_batch=5)
    assert b"\\ud800" in item


@given(st.text())
def test_printable_leaves_no_control_character_in_a_log_line(text):
    shown = printable(text, limit=10_000)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u2028" not in shown and "\u2029" not in shown
