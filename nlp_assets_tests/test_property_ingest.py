"""Property-based tests of landing-file ingest: whatever lands, every record is accounted for
exactly once (a document or a quarantine row with a reason) and nothing raises.

Hypothesis writes days of JSONL, CSV, Parquet and TXT files holding hostile values (JSON nested
thousands deep, integers of thousands of digits, overflowing timestamps, invalid UTF-8, lone
surrogates, NUL, broken quoting, fields over small caps), plus symbolic links, a FIFO, files of
unsupported types and hidden files. Each file says how many records it holds; a file the reader
must refuse whole (over the file cap, no `text` column, not a regular file) holds one. Every
file also carries "canary" records that are plainly valid: they must come out as documents, so
a reader that quarantined everything would fail here too.

CI runs the "ci" profile (nlp_assets_tests/conftest.py: bounded examples, no example database).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nlp_assets.kernels.ingest import (
    COMPLETION_MARKER,
    IngestCaps,
    RecordError,
    normalise_record,
    read_landing_day,
)

DAY = date(2026, 3, 1)
PROPERTY = settings(
    deadline=None,  # file IO on a busy machine: no per-example deadline
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Small caps, so generated values go over them; the record cap is also large enough in one of
#: the two for deep nesting and long integers to reach the JSON parser.
CAPS = st.builds(
    IngestCaps,
    file_bytes=st.sampled_from([3_000, 1_000_000, 1_000_000]),
    record_bytes=st.sampled_from([200, 12_000, 12_000]),
)


@dataclass
class Day:
    """A landing day as drawn: files with the records each holds, and odd entries."""

    caps: IngestCaps
    files: list[tuple[str, bytes, int, list[str]]]  # name, bytes, records, canary ids
    extras: set[str]

    def write(self, root: Path) -> tuple[dict[str, int], dict[str, list[str]]]:
        """Writes the day under `root`; the records each file holds (one for a file the reader
        must refuse whole) and the canary ids of each file within the cap."""
        folder = root / DAY.isoformat()
        (folder / "sub").mkdir(parents=True)
        expected: dict[str, int] = {}
        canaries: dict[str, list[str]] = {}
        for name, data, records, ids in self.files:
            (folder / name).write_bytes(data)
            relative = f"{DAY.isoformat()}/{name}"
            over = len(data) > self.caps.file_bytes
            expected[relative] = 1 if over else records
            canaries[relative] = [] if over else ids
        outside = root / "outside"  # in the landing root, not in the day folder
        outside.mkdir()
        (outside / "secret.jsonl").write_text('{"id": "s", "text": "SECRET outside the day"}\n')
        refused = {
            "link": lambda p: p.symlink_to(outside / "secret.jsonl"),
            "folder_link": lambda p: p.symlink_to(outside, target_is_directory=True),
            "fifo": os.mkfifo,
        }
        for extra, make in refused.items():
            if extra in self.extras:
                make(folder / f"{extra}.jsonl")
                expected[f"{DAY.isoformat()}/{extra}.jsonl"] = 1
        if "hidden" in self.extras:
            (folder / ".upload.jsonl.part").write_bytes(b'{"text": "half')  # not read
        if "marker" in self.extras:
            (folder / COMPLETION_MARKER).write_bytes(b"")  # not a record
        return expected, canaries


# values ----------------------------------------------------------------------------------------
ODD_STRINGS = [
    "",
    " ",
    "\u3000\u200b\ufeff",
    "\x00",
    "a\x00b",
    "\ud800",
    "lone \udfff low",
    '"',
    '","',
    "\n",
    "\r\n",
    'x"y',
    "é😀",
    "1722082021420",
    "2024-05-01T10:00:00+02:00",
    "=cmd|' /C calc'!A0",
]
any_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=30),  # lone surrogates included
    st.sampled_from(ODD_STRINGS),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["x", "é", "\n", '"', "a,b"]), st.integers(150, 6_000)
    ),
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=10**400),  # past int64 and float
    st.floats(),  # NaN and infinities included
    any_text,
)
timestamp = st.one_of(
    scalar,
    st.integers(-(2**70), 2**70),
    st.integers(0, 10**20).map(str),  # epoch digits as CSV carries them
    st.datetimes().map(lambda t: t.isoformat()),
)
record = st.fixed_dictionaries(
    {"text": st.one_of(any_text, scalar)},
    optional={
        "id": scalar,
        "source": st.one_of(scalar, st.just("shop")),
        "timestamp": timestamp,
        "metadata": st.one_of(scalar, st.dictionaries(st.text(max_size=5), scalar, max_size=3)),
        "extra": st.one_of(scalar, st.lists(scalar, max_size=3)),
    },
)


def _json_line(value: dict, ascii_only: bool) -> bytes:
    # escaped (\ud800) or, encoded as they are, invalid UTF-8: lone surrogates both ways
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


raw_line = (
    st.one_of(
        st.integers(10, 4_000).map(
            lambda n: b'{"text": "deep", "m": ' + b"[" * n + b"]" * n + b"}"
        ),
        st.integers(4_000, 6_000).map(lambda n: b'{"id": 1, "text": "t", "n": ' + b"9" * n + b"}"),
        st.just(b'{"id": 1, "text": "t", "timestamp": 1' + b"0" * 400 + b"}"),
        st.just(b'{"id": 2, "text": "caf\xe9"}'),
        st.just(b'{"id": 3, "text": "a\x00b"}'),
        st.just(b'\xef\xbb\xbf{"id": 4, "text": "after a BOM"}'),
        st.binary(min_size=1, max_size=40),
        st.integers(300, 20_000).map(lambda n: b'{"text": "' + b"z" * n + b'"}'),
    )
    .map(lambda line: line.replace(b"\n", b" "))
    .filter(lambda line: line.strip() != b"")
)


# files -----------------------------------------------------------------------------------------
@st.composite
def jsonl_file(draw: st.DrawFn, name: str) -> tuple[bytes, int, list[str]]:
    lines = draw(
        st.lists(st.one_of(st.builds(_json_line, record, st.booleans()), raw_line), max_size=12)
    )
    canaries = [f"{name}-canary-{n}" for n in range(draw(st.integers(1, 3)))]
    lines += [json.dumps({"id": c, "text": f"valid {c}"}).encode() for c in canaries]
    lines = draw(st.permutations(lines))
    blanks = draw(st.lists(st.sampled_from([b"", b"   ", b"\r"]), max_size=3))  # not records
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return ending.join([*blanks, *lines]) + ending, len(lines), canaries


_MERGING_START = ('"', ",", "\r", "\n")


def _after_a_broken_quote(cells: list[str]) -> list[str]:
    """CSV's own grammar closes an open quote at a quoted cell starting with a quote, a comma
    or a line break (and at a lone empty cell, written `""`): such lines honestly belong to the
    broken row. Cells after one are kept clear of that, so each row is still one record."""
    cells = ["x" + cell if cell.startswith(_MERGING_START) else cell for cell in cells]
    return ["x"] if cells == [""] else cells


@st.composite
def csv_file(draw: st.DrawFn, name: str) -> tuple[bytes, int, list[str]]:
    header = draw(st.sampled_from([["id", "text"], ["text", "id", "timestamp", "note"]]))
    width = len(header)
    canaries = [f"{name}-canary-{n}" for n in range(draw(st.integers(1, 3)))]
    rows: list[tuple[str, list[str]]] = [
        ("good", [c if h == "id" else f"valid {c}" if h == "text" else "" for h in header])
        for c in canaries
    ]
    rows += draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("good"), st.lists(any_text, min_size=width, max_size=width)),
                st.tuples(
                    st.just("good"),  # a wrong number of fields: one quarantined row
                    st.sampled_from([1, width - 1, width + 1, width + 3]).flatmap(
                        lambda k: st.lists(any_text, min_size=k, max_size=k)
                    ),
                ),
                st.tuples(
                    st.just("broken"),  # an unterminated quote on one line
                    st.text(st.characters(exclude_characters='"\n\r'), max_size=30),
                ),
            ),
            max_size=10,
        )
    )
    rows = draw(st.permutations(rows))
    out = io.StringIO()
    # CR LF endings: with "\n" alone, csv.writer leaves a bare CR in a cell unquoted, which any
    # CSV reader takes for the end of a row
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    broken_before = False
    for kind, cells in rows:
        if kind == "broken":
            out.write(f'broken,"b{cells}\n')
            broken_before = True
        else:
            writer.writerow(_after_a_broken_quote(cells) if broken_before else cells)
    return out.getvalue().encode("utf-8", "surrogatepass"), len(rows), canaries


def _safe_text(value: object) -> str | None:
    """Arrow strings are valid UTF-8: lone surrogates cannot be written to Parquet."""
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", "replace").decode("utf-8")


@st.composite
def parquet_file(draw: st.DrawFn, name: str) -> tuple[bytes, int, list[str]]:
    canaries = [f"{name}-canary-{n}" for n in range(draw(st.integers(1, 3)))]
    n = draw(st.integers(0, 10))
    texts = [
        _safe_text(t)
        for t in draw(st.lists(st.one_of(any_text, st.none()), min_size=n, max_size=n))
    ]
    ids = draw(st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=n, max_size=n))
    seconds = draw(  # 300 billion seconds is the year 11476: no Python datetime holds it
        st.lists(st.one_of(st.none(), st.integers(-(10**11), 3 * 10**11)), min_size=n, max_size=n)
    )
    columns = ["id", "text", "timestamp"]
    if draw(st.booleans()):
        columns[1] = "body"  # no text column: the file is one record
    schema = pa.schema(
        [(columns[0], pa.string()), (columns[1], pa.string()), (columns[2], pa.timestamp("s"))]
    )
    # canaries in a row group of their own: a hostile row group may be over the file cap
    canary_rows = [canaries, [f"valid {c}" for c in canaries], [None] * len(canaries)]
    hostile_rows = [[_safe_text(i) for i in ids], texts, seconds]
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, schema) as writer:
        writer.write_table(pa.table(canary_rows, schema=schema))
        writer.write_table(
            pa.table(hostile_rows, schema=schema), row_group_size=draw(st.integers(1, 5))
        )
    if columns[1] == "body":
        return sink.getvalue(), 1, []
    return sink.getvalue(), len(canaries) + n, canaries


txt_file = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b" \n\t", "caf\xe9 cp1252 \x80".encode("latin-1")]),
    st.integers(190, 13_000).map(lambda n: b"w" * n),
)

FORMATS = {"jsonl": jsonl_file, "csv": csv_file, "parquet": parquet_file}


@st.composite
def landing_days(draw: st.DrawFn) -> Day:
    files = []
    formats = draw(st.lists(st.sampled_from(sorted(FORMATS)), min_size=1, max_size=4))
    for index, suffix in enumerate(formats):
        name = f"{'sub/' if index % 2 else ''}f{index}"
        data, records, canaries = draw(FORMATS[suffix](name.replace("/", "-")))
        files.append((f"{name}.{suffix}", data, records, canaries))
    for index, data in enumerate(draw(st.lists(txt_file, max_size=2))):
        files.append((f"t{index}.txt", data, 1, []))
    files.append(("canary.txt", b"a valid text", 1, [f"{DAY.isoformat()}/canary.txt"]))
    extras = draw(
        st.sets(st.sampled_from(["link", "folder_link", "fifo", "xlsx", "hidden", "marker"]))
    )
    if "xlsx" in extras:
        files.append(("sheet.xlsx", b"PK\x03\x04", 1, []))  # unsupported: one record
    return Day(caps=draw(CAPS), files=files, extras=extras)


# properties ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("property-ingest")


@PROPERTY
@given(day=landing_days())
def test_every_landed_record_is_one_document_or_one_quarantine_row(base: Path, day: Day) -> None:
    root = Path(tempfile.mkdtemp(dir=base))
    expected, canaries = day.write(root / "landing")

    result = read_landing_day(root / "landing", DAY, caps=day.caps)  # raises nothing

    found: dict[str, int] = {}
    for file in [*result.docs["file"], *result.quarantine["file"]]:
        found[file] = found.get(file, 0) + 1
    assert found == expected
    assert result.quarantine["reason"].null_count() == 0
    for reason in result.quarantine["reason"]:
        event(re.sub(r"\d+|'.*", "N", reason)[:60])  # what was refused, in the statistics
    assert result.docs["doc_id"].is_unique().all()
    loaded = set(result.docs["source_id"])
    for file, ids in canaries.items():
        assert set(ids) <= loaded, (
            file,
            result.quarantine.filter(result.quarantine["file"] == file).to_dicts(),
        )
    everything = str(result.docs.to_dicts()) + str(result.quarantine.to_dicts())
    assert "SECRET" not in everything  # a link's target is never read


@PROPERTY
@given(value=record)
def test_normalise_record_takes_a_record_or_refuses_it_with_a_reason(value: dict) -> None:
    try:
        row = normalise_record(value, default_source="topic")
    except RecordError as refused:
        assert str(refused)
        return
    assert row["text"].strip()
    row["text"].encode("utf-8")  # storable: no lone surrogate got through
    if row["metadata"] is not None:
        json.loads(row["metadata"])
