"""Stage 1 ingest: a landing day of JSONL, CSV, Parquet and TXT files into raw documents.

Every input file is built in `tmp_path`; no network, no Dagster.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nlp_assets.kernels import ingest
from nlp_assets.kernels.ingest import (
    RAW_SCHEMA,
    STAGE,
    TEXT_FILES_SOURCE,
    RecordError,
    doc_id_for,
    parse_event_time,
    read_landing_day,
    read_landing_files,
)
from nlp_assets.kernels.quarantine import QUARANTINE_SCHEMA

DAY = date(2024, 5, 1)
MAY_1_10H = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
MAY_1_10H_MS = 1_714_557_600_000  # MAY_1_10H as epoch milliseconds


def expected_id(source: str, source_id: str | None, text: str = "") -> str:
    """The documented doc_id, recomputed here rather than trusted from the module."""
    key = f"{source}\x1f{source_id}" if source_id else f"text\x1f{text}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path / "landing"


@pytest.fixture
def day_dir(landing: Path) -> Path:
    path = landing / DAY.isoformat()
    path.mkdir(parents=True)
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """One JSON value per line (records may also be raw `str`/`bytes` lines, written as-is)."""
    lines = []
    for record in records:
        if isinstance(record, bytes):
            lines.append(record)
        elif isinstance(record, str):
            lines.append(record.encode("utf-8"))
        else:
            lines.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def by_source_id(docs: pl.DataFrame) -> dict[str, dict[str, Any]]:
    rows = {row["source_id"]: row for row in docs.iter_rows(named=True)}
    assert len(rows) == docs.height, "source_id is not unique in this test's data"
    return rows


def only_row(frame: pl.DataFrame) -> dict[str, Any]:
    assert frame.height == 1, frame
    return frame.row(0, named=True)


def assert_schemas(result) -> None:
    assert dict(result.docs.schema) == RAW_SCHEMA
    assert dict(result.quarantine.schema) == QUARANTINE_SCHEMA


# --- a whole day of mixed formats ---------------------------------------------------------


def test_jsonl_csv_parquet_and_txt_of_one_day_load_together(landing: Path, day_dir: Path) -> None:
    write_jsonl(
        day_dir / "reviews.jsonl",
        [
            {
                "id": "r1",
                "source": "shop",
                "text": "Great kettle",
                "timestamp": "2024-05-01T10:00:00Z",
                "rating": 5,
                "metadata": {"lang_hint": "en"},
            },
            {"id": 2, "text": "No source field", "timestamp": MAY_1_10H_MS},
        ],
    )
    (day_dir / "survey.csv").write_text(
        "id,text,timestamp,channel\n"
        'c1,"Hello, world",2024-05-01T12:00:00+02:00,web\n'
        'c2,"Two\nlines",,\n',
        encoding="utf-8",
    )
    pl.DataFrame(
        {
            "id": [7, 8],
            "text": ["From parquet", "Another parquet row"],
            "source": ["forum", "forum"],
            "timestamp": [MAY_1_10H, None],
            "votes": [3, None],
        },
        schema={
            "id": pl.Int64,
            "text": pl.String,
            "source": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
            "votes": pl.Int64,
        },
    ).write_parquet(day_dir / "forum.parquet")
    (day_dir / "note.txt").write_text("A plain text note.\nSecond line.", encoding="utf-8")

    result = read_landing_day(landing, DAY)

    assert_schemas(result)
    assert result.quarantine.height == 0, result.quarantine
    assert result.files_read == 4
    docs = by_source_id(result.docs)
    # a text file is named by its path under the landing root: unique across days and folders
    assert set(docs) == {"r1", "2", "c1", "c2", "7", "8", "2024-05-01/note.txt"}

    r1 = docs["r1"]
    assert (r1["source"], r1["text"], r1["event_time"]) == ("shop", "Great kettle", MAY_1_10H)
    assert json.loads(r1["metadata"]) == {"rating": 5, "lang_hint": "en"}
    assert r1["file"] == "2024-05-01/reviews.jsonl"

    # no `source`: named after the file; an integer id becomes its string
    assert docs["2"]["source"] == "reviews"
    assert docs["2"]["event_time"] == MAY_1_10H
    assert docs["2"]["metadata"] is None

    assert docs["c1"]["source"] == "survey"
    assert docs["c1"]["text"] == "Hello, world"
    assert docs["c1"]["event_time"] == MAY_1_10H  # +02:00 converted to UTC
    assert json.loads(docs["c1"]["metadata"]) == {"channel": "web"}
    assert docs["c2"]["text"] == "Two\nlines"
    assert docs["c2"]["event_time"] is None
    assert docs["c2"]["metadata"] is None  # empty CSV cells are not metadata

    assert docs["7"]["source"] == "forum"
    assert docs["7"]["event_time"] == MAY_1_10H
    assert json.loads(docs["7"]["metadata"]) == {"votes": 3}
    assert docs["8"]["metadata"] is None
    assert docs["8"]["file"] == "2024-05-01/forum.parquet"

    note = docs["2024-05-01/note.txt"]
    assert note["source"] == TEXT_FILES_SOURCE
    assert note["text"] == "A plain text note.\nSecond line."
    assert note["metadata"] is None  # UTF-8 is not worth a note

    assert result.docs["ingest_date"].to_list() == [DAY] * 7
    for row in result.docs.iter_rows(named=True):
        assert row["doc_id"] == expected_id(row["source"], row["source_id"], row["text"])


def test_files_in_subfolders_are_read_and_other_days_and_hidden_files_are_not(
    landing: Path, day_dir: Path
) -> None:
    (day_dir / "batch" / "late").mkdir(parents=True)
    write_jsonl(day_dir / "batch" / "late" / "a.jsonl", [{"id": "1", "text": "nested"}])
    (day_dir / ".partial.jsonl").write_text("{not json at all\n", encoding="utf-8")
    other_day = landing / "2024-05-02"
    other_day.mkdir()
    write_jsonl(other_day / "a.jsonl", [{"id": "2", "text": "tomorrow"}])

    result = read_landing_day(landing, DAY)

    assert result.docs["text"].to_list() == ["nested"]
    assert result.docs["file"].to_list() == ["2024-05-01/batch/late/a.jsonl"]
    assert result.quarantine.height == 0
    assert result.files_read == 1


def test_metadata_merges_extra_fields_and_the_metadata_object_into_sorted_json(
    landing: Path, day_dir: Path
) -> None:
    write_jsonl(
        day_dir / "m.jsonl",
        [
            {
                "id": "1",
                "text": "x",
                "zeta": "last",
                "alpha": [1, 2],
                "empty": None,
                "metadata": {"nested": {"k": "v"}, "beta": True},
            }
        ],
    )

    metadata = only_row(read_landing_day(landing, DAY).docs)["metadata"]

    assert json.loads(metadata) == {
        "alpha": [1, 2],
        "beta": True,
        "nested": {"k": "v"},
        "zeta": "last",
    }
    assert list(json.loads(metadata)) == ["alpha", "beta", "nested", "zeta"]  # sorted keys


# --- doc_id ---------------------------------------------------------------------------------


def test_doc_id_is_the_documented_hash() -> None:
    by_id = hashlib.sha256(b"shop\x1fr1").hexdigest()[:16]
    by_text = hashlib.sha256(b"text\x1fGreat kettle").hexdigest()[:16]
    assert doc_id_for("shop", "r1", "any text") == by_id
    assert doc_id_for("shop", None, "Great kettle") == by_text
    # with an id the text does not matter; without one it is all that matters
    assert doc_id_for("shop", "r1", "a") == doc_id_for("shop", "r1", "b")
    assert doc_id_for("shop", "r1", "a") != doc_id_for("forum", "r1", "a")
    assert doc_id_for("shop", None, "same") == doc_id_for("forum", None, "same")
    assert doc_id_for("shop", None, "a") != doc_id_for("shop", None, "b")
    assert len(doc_id_for("shop", "r1", "")) == 16


def test_doc_ids_are_stable_across_runs_and_file_order(landing: Path, day_dir: Path) -> None:
    records = [
        {"id": "1", "source": "shop", "text": "one"},
        {"source": "shop", "text": "no id here"},
        {"id": "", "source": "shop", "text": "empty id counts as none"},
    ]
    write_jsonl(day_dir / "a.jsonl", records)

    first = read_landing_day(landing, DAY).docs
    second = read_landing_day(landing, DAY).docs
    # the same records landed in another file, in another order, still get the same ids
    (day_dir / "a.jsonl").unlink()
    write_jsonl(day_dir / "renamed.jsonl", records[::-1])
    third = read_landing_day(landing, DAY).docs

    ids = dict(zip(first["text"], first["doc_id"], strict=True))
    assert ids == {
        "one": expected_id("shop", "1"),
        "no id here": expected_id("shop", None, "no id here"),
        "empty id counts as none": expected_id("shop", None, "empty id counts as none"),
    }
    assert dict(zip(second["text"], second["doc_id"], strict=True)) == ids
    assert dict(zip(third["text"], third["doc_id"], strict=True)) == ids
    assert first["source_id"].to_list() == ["1", None, None]


# --- record-level quarantine ----------------------------------------------------------------


def test_invalid_json_line_is_quarantined_with_location_and_raw_payload(
    landing: Path, day_dir: Path
) -> None:
    broken = '{"id": "2", "text": "unterminated'
    write_jsonl(
        day_dir / "a.jsonl",
        [{"id": "1", "text": "good one"}, broken, {"id": "3", "text": "good three"}],
    )

    result = read_landing_day(landing, DAY)

    assert sorted(result.docs["source_id"].to_list()) == ["1", "3"]
    row = only_row(result.quarantine)
    assert row["reason"].startswith("invalid JSON: ")
    assert "column" in row["reason"]
    assert row["location"] == "line 2"
    assert row["payload"] == broken
    assert row["file"] == "2024-05-01/a.jsonl"
    assert (row["stage"], row["ingest_date"], row["doc_id"]) == (STAGE, DAY, None)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"id": "x", "body": "no text field"}, "missing required field 'text'"),
        ({"id": "x", "text": None}, "missing required field 'text'"),
        ({"id": "x", "text": 42}, "field 'text' must be a string, got int"),
        ({"id": "x", "text": ["a", "list"]}, "field 'text' must be a string, got list"),
        ({"id": "x", "text": "t", "timestamp": "yesterday"}, "invalid timestamp 'yesterday'"),
        ({"id": "x", "text": "t", "timestamp": True}, "invalid timestamp True"),
        ({"id": "x", "text": "t", "timestamp": 1e20}, "out of range"),
        ({"id": "x", "text": "t", "timestamp": 99_999_999_999_999_999}, "out of range"),
        ({"id": "x", "text": "t", "metadata": "not an object"}, "field 'metadata' must be"),
        ({"id": 1.5, "text": "t"}, "field 'id' must be a string or an integer"),
        ({"id": "x", "text": "t", "source": 7}, "field 'source' must be a string"),
        (["a", "list"], "record must be an object, got list"),
    ],
)
def test_record_breaking_the_contract_is_quarantined_with_a_clear_reason(
    landing: Path, day_dir: Path, record: Any, reason: str
) -> None:
    write_jsonl(day_dir / "a.jsonl", [{"id": "ok", "text": "fine"}, record])

    result = read_landing_day(landing, DAY)

    assert result.docs["source_id"].to_list() == ["ok"]
    row = only_row(result.quarantine)
    assert reason in row["reason"]
    assert row["location"] == "line 2"
    assert row["file"] == "2024-05-01/a.jsonl"
    assert json.loads(row["payload"]) == record  # the record itself, for whoever fixes it


def test_nan_timestamp_is_quarantined_not_a_crash(landing: Path, day_dir: Path) -> None:
    # Python's json accepts NaN; before the fix it raised out of read_landing_files
    write_jsonl(day_dir / "a.jsonl", ['{"id": "1", "text": "t", "timestamp": NaN}'])

    result = read_landing_day(landing, DAY)

    assert result.docs.height == 0
    assert "invalid timestamp nan" in only_row(result.quarantine)["reason"]


def test_jsonl_line_with_invalid_utf8_is_quarantined_and_the_rest_loads(
    landing: Path, day_dir: Path
) -> None:
    write_jsonl(
        day_dir / "a.jsonl",
        [
            {"id": "1", "text": "café"},
            b'{"id": "2", "text": "caf\xe9"}',  # Latin-1 é inside a UTF-8 file
            {"id": "3", "text": "naïve"},
        ],
    )

    result = read_landing_day(landing, DAY)

    assert dict(zip(result.docs["source_id"], result.docs["text"], strict=True)) == {
        "1": "café",
        "3": "naïve",
    }
    row = only_row(result.quarantine)
    assert row["reason"] == "line is not valid UTF-8"
    assert row["location"] == "line 2"
    assert row["payload"] == '{"id": "2", "text": "caf\ufffd"}'


def test_jsonl_with_a_utf8_byte_order_mark_loads_its_first_line(
    landing: Path, day_dir: Path
) -> None:
    (day_dir / "excel.jsonl").write_bytes(
        b'\xef\xbb\xbf{"id": "1", "text": "first"}\n{"id": "2", "text": "second"}\n'
    )

    result = read_landing_day(landing, DAY)

    assert result.quarantine.height == 0, result.quarantine
    assert result.docs["text"].to_list() == ["first", "second"]


def test_all_invalid_file_gives_no_docs_and_every_line_quarantined(
    landing: Path, day_dir: Path
) -> None:
    write_jsonl(
        day_dir / "bad.jsonl",
        ["{oops", {"id": "1"}, {"id": "2", "text": 3}, "[]", b"\xff\xfe"],
    )

    result = read_landing_day(landing, DAY)

    assert_schemas(result)
    assert result.docs.height == 0
    assert result.files_read == 1
    assert result.quarantine["location"].to_list() == [f"line {n}" for n in range(1, 6)]
    assert result.quarantine["reason"].null_count() == 0
    assert result.quarantine["file"].unique().to_list() == ["2024-05-01/bad.jsonl"]


# --- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        MAY_1_10H_MS,
        MAY_1_10H_MS / 1,  # float milliseconds (Parquet doubles)
        1_714_557_600,  # epoch seconds
        "1714557600000",  # epoch milliseconds as CSV carries them
        "1714557600",
        "2024-05-01T10:00:00Z",
        "2024-05-01T10:00:00.000Z",
        " 2024-05-01T12:00:00+02:00 ",
        "2024-05-01 10:00:00",  # naive means UTC
        datetime(2024, 5, 1, 10, 0),
        datetime(2024, 5, 1, 5, 0, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_parse_event_time_gives_utc(value: Any) -> None:
    parsed = parse_event_time(value)
    assert parsed == MAY_1_10H
    assert parsed.utcoffset() == timedelta(0)


def test_parse_event_time_absent_and_invalid() -> None:
    assert parse_event_time(None) is None
    assert parse_event_time("") is None
    for bad in ["yesterday", "2024-13-01", "12/05/2024", False, [2024], float("inf")]:
        with pytest.raises(RecordError, match="invalid timestamp"):
            parse_event_time(bad)


def test_epoch_millisecond_timestamps_in_a_csv_load(landing: Path, day_dir: Path) -> None:
    (day_dir / "export.csv").write_text(
        f"id,text,timestamp\n1,millis,{MAY_1_10H_MS}\n2,iso,2024-05-01T10:00:00Z\n",
        encoding="utf-8",
    )

    result = read_landing_day(landing, DAY)

    assert result.quarantine.height == 0, result.quarantine
    assert result.docs["event_time"].to_list() == [MAY_1_10H, MAY_1_10H]


# --- file-level quarantine ------------------------------------------------------------------


def test_unparseable_parquet_and_csv_without_text_are_quarantined_as_files(
    landing: Path, day_dir: Path
) -> None:
    (day_dir / "broken.parquet").write_bytes(os.urandom(2048))
    (day_dir / "no_text.csv").write_text("id,body\n1,hello\n2,world\n", encoding="utf-8")
    write_jsonl(day_dir / "good.jsonl", [{"id": "1", "text": "survives"}])
    pl.DataFrame({"id": ["p1"], "text": ["parquet survives"]}).write_parquet(
        day_dir / "good.parquet"
    )

    result = read_landing_day(landing, DAY)

    assert sorted(result.docs["text"].to_list()) == ["parquet survives", "survives"]
    assert result.files_read == 4
    rejected = {row["file"]: row for row in result.quarantine.iter_rows(named=True)}
    assert set(rejected) == {"2024-05-01/broken.parquet", "2024-05-01/no_text.csv"}
    assert rejected["2024-05-01/broken.parquet"]["reason"].startswith("cannot parse file: ")
    assert rejected["2024-05-01/no_text.csv"]["reason"] == (
        "cannot parse file: RecordError: no 'text' column (columns: id, body)"
    )
    assert all(row["location"] == "file" for row in rejected.values())
    assert all(len(row["reason"]) <= 500 for row in rejected.values())


def test_file_failing_part_way_is_quarantined_whole_without_its_earlier_records(
    landing: Path, day_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(day_dir / "flaky.jsonl", [{"id": "1", "text": "read before the failure"}])
    write_jsonl(day_dir / "steady.jsonl", [{"id": "2", "text": "unaffected"}])
    real_file_items = ingest._file_items

    def failing_after_first_record(handle, path: Path, relative: str, caps):
        yield from real_file_items(handle, path, relative, caps)
        if path.name == "flaky.jsonl":
            raise OSError("disk went away")

    monkeypatch.setattr(ingest, "_file_items", failing_after_first_record)

    result = read_landing_day(landing, DAY)

    assert result.docs["text"].to_list() == ["unaffected"]
    row = only_row(result.quarantine)
    assert (row["file"], row["location"]) == ("2024-05-01/flaky.jsonl", "file")
    assert row["reason"] == "cannot parse file: OSError: disk went away"


def test_unsupported_extension_is_quarantined_and_not_counted_as_read(
    landing: Path, day_dir: Path
) -> None:
    (day_dir / "report.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    (day_dir / "data.json").write_text('{"id": "1", "text": "a JSON array file"}')
    write_jsonl(day_dir / "good.ndjson", [{"id": "1", "text": "ndjson is JSON Lines"}])

    result = read_landing_day(landing, DAY)

    assert result.docs["text"].to_list() == ["ndjson is JSON Lines"]
    assert result.files_read == 1
    assert dict(zip(result.quarantine["file"], result.quarantine["reason"], strict=True)) == {
        "2024-05-01/data.json": "unsupported file type '.json'",
        "2024-05-01/report.xlsx": "unsupported file type '.xlsx'",
    }
    assert result.quarantine["location"].to_list() == ["file", "file"]


def test_upper_case_suffixes_are_read_as_their_format(landing: Path, day_dir: Path) -> None:
    (day_dir / "EXPORT.CSV").write_text("id,text\n1,from an upper-case CSV\n", encoding="utf-8")
    pl.DataFrame({"id": ["2"], "text": ["from an upper-case Parquet"]}).write_parquet(
        day_dir / "DUMP.PARQUET"
    )

    result = read_landing_day(landing, DAY)

    assert result.quarantine.height == 0, result.quarantine
    assert sorted(result.docs["text"].to_list()) == [
        "from an upper-case CSV",
        "from an upper-case Parquet",
    ]


# --- text encodings -------------------------------------------------------------------------


def test_windows_1252_txt_loads_with_the_right_characters_and_its_encoding(
    landing: Path, day_dir: Path
) -> None:
    text = "Café – “naïve” façade, 5 € — Œuvre"
    (day_dir / "legacy.txt").write_bytes(text.encode("cp1252"))

    doc = only_row(read_landing_day(landing, DAY).docs)

    assert doc["text"] == text
    assert json.loads(doc["metadata"]) == {"encoding": "cp1252"}
    assert doc["source_id"] == "2024-05-01/legacy.txt"


def test_latin1_txt_with_bytes_undefined_in_windows_1252_still_loads(
    landing: Path, day_dir: Path
) -> None:
    (day_dir / "latin.txt").write_bytes(b"Z\xfcrich \x81 \xa9 2024")  # 0x81 is unused in cp1252

    doc = only_row(read_landing_day(landing, DAY).docs)

    assert doc["text"] == "Zürich \x81 © 2024"
    assert json.loads(doc["metadata"]) == {"encoding": "latin-1"}


def test_utf8_txt_with_byte_order_mark_loads_without_it(landing: Path, day_dir: Path) -> None:
    (day_dir / "bom.txt").write_bytes("\ufeffÜber 😀".encode())

    doc = only_row(read_landing_day(landing, DAY).docs)

    assert doc["text"] == "Über 😀"
    assert doc["metadata"] is None


def test_emoji_survive_every_format(landing: Path, day_dir: Path) -> None:
    emoji = "Love it 😍👍🏽 family 👩‍👩‍👧 flag 🇫🇷"
    write_jsonl(day_dir / "a.jsonl", [{"id": "j", "text": emoji}])
    (day_dir / "b.csv").write_text(f"id,text\nc,{emoji}\n", encoding="utf-8")
    pl.DataFrame({"id": ["p"], "text": [emoji]}).write_parquet(day_dir / "c.parquet")
    (day_dir / "d.txt").write_text(emoji, encoding="utf-8")

    result = read_landing_day(landing, DAY)

    assert result.quarantine.height == 0
    assert result.docs["text"].to_list() == [emoji] * 4


# --- duplicates, empty days, conservation ---------------------------------------------------


def test_duplicate_id_in_the_same_source_is_quarantined_and_the_first_kept(
    landing: Path, day_dir: Path
) -> None:
    write_jsonl(
        day_dir / "a.jsonl",
        [
            {"id": "1", "source": "shop", "text": "first version"},
            {"id": "1", "source": "shop", "text": "second version"},
            {"id": "1", "source": "forum", "text": "same id, other source"},
        ],
    )
    write_jsonl(day_dir / "b.jsonl", [{"id": "1", "source": "shop", "text": "third version"}])

    result = read_landing_day(landing, DAY)

    assert sorted(zip(result.docs["source"], result.docs["text"], strict=True)) == [
        ("forum", "same id, other source"),
        ("shop", "first version"),
    ]
    shop_id = expected_id("shop", "1")
    assert result.quarantine["doc_id"].to_list() == [shop_id, shop_id]
    assert result.quarantine["payload"].to_list() == ["second version", "third version"]
    assert result.quarantine["location"].to_list() == ["line 2", "line 1"]
    assert result.quarantine["file"].to_list() == ["2024-05-01/a.jsonl", "2024-05-01/b.jsonl"]
    for reason in result.quarantine["reason"]:
        assert reason.startswith("duplicate doc_id")
        assert "2024-05-01/a.jsonl line 1" in reason  # names the record that was kept
    assert result.docs["doc_id"].is_unique().all()


@pytest.mark.parametrize("make_dir", [False, True], ids=["absent day", "empty day"])
def test_empty_or_absent_day_gives_empty_frames_with_full_schemas(
    landing: Path, make_dir: bool
) -> None:
    if make_dir:
        (landing / DAY.isoformat()).mkdir(parents=True)

    result = read_landing_day(landing, DAY)

    assert_schemas(result)
    assert result.docs.height == 0
    assert result.quarantine.height == 0
    assert result.files_read == 0


def test_conservation_every_record_written_is_a_doc_or_quarantined(
    landing: Path, day_dir: Path
) -> None:
    jsonl = [
        {"id": "1", "text": "ok"},
        "not json",
        {"id": "2"},
        {"id": "1", "text": "duplicate of line 1"},
        {"id": "3", "text": "ok", "timestamp": "never"},
        b'{"id": "4", "text": "\xff"}',
        {"id": "5", "text": "ok", "timestamp": MAY_1_10H_MS},
        {"text": "no id"},
        {"text": "no id"},  # same text, no id: the same doc_id
    ]
    write_jsonl(day_dir / "a.jsonl", jsonl)
    with (day_dir / "a.jsonl").open("ab") as handle:
        handle.write(b"\n   \n")  # blank lines are not records
    (day_dir / "b.csv").write_text(
        "id,text,timestamp\n10,ok,\n11,,\n12,ok,bad\n13,ok,2024-05-01\n", encoding="utf-8"
    )
    pl.DataFrame({"id": [20, 21, 22], "text": ["ok", None, "ok"]}).write_parquet(
        day_dir / "c.parquet"
    )
    (day_dir / "d.txt").write_text("one document", encoding="utf-8")
    written = len(jsonl) + 4 + 3 + 1

    result = read_landing_day(landing, DAY)

    assert result.docs.height == 8
    assert result.quarantine.height == 9
    assert result.docs.height + result.quarantine.height == written
    assert result.docs["doc_id"].is_unique().all()
    assert (result.quarantine["location"] != "file").all()  # every file itself was readable
    assert result.quarantine["reason"].null_count() == 0


def test_same_text_file_name_in_two_folders_gives_two_documents(
    landing: Path, day_dir: Path
) -> None:
    (day_dir / "a").mkdir()
    (day_dir / "b").mkdir()
    (day_dir / "a" / "notes.txt").write_text("first", encoding="utf-8")
    (day_dir / "b" / "notes.txt").write_text("second", encoding="utf-8")
    (day_dir / ".staging").mkdir()
    (day_dir / ".staging" / "partial.txt").write_text("still being copied", encoding="utf-8")

    result = read_landing_day(landing, DAY)

    assert result.quarantine.height == 0
    assert sorted(result.docs["text"]) == ["first", "second"]
    assert result.docs["doc_id"].n_unique() == 2


def test_boolean_id_is_refused(landing: Path, day_dir: Path) -> None:
    write_jsonl(day_dir / "x.jsonl", [{"id": True, "text": "hello"}])
    result = read_landing_day(landing, DAY)
    assert result.docs.height == 0
    assert "field 'id'" in only_row(result.quarantine)["reason"]


# --- issue 11: hostile landing files --------------------------------------------------------


def test_csv_row_with_an_unterminated_quote_is_one_quarantined_row_and_the_rest_loads(
    landing: Path, day_dir: Path
) -> None:
    (day_dir / "survey.csv").write_bytes(
        b"id,text\n"
        b"1,before the broken row\n"
        b'2,"the quote is never closed\n'
        b"3,after the broken row\n"
        b'4,"quoted, with a comma"\n'
        b'5,"two\nlines"\n'
    )

    result = read_landing_day(landing, DAY)

    assert dict(zip(result.docs["source_id"], result.docs["text"], strict=True)) == {
        "1": "before the broken row",
        "3": "after the broken row",
        "4": "quoted, with a comma",
        "5": "two\nlines",
    }
    row = only_row(result.quarantine)
    assert (row["file"], row["location"]) == ("2024-05-01/survey.csv", "line 3")
    assert row["reason"].startswith("malformed CSV row: unterminated quote")
    assert row["raw"] == b'2,"the quote is never closed'
    assert row["raw_size"] == len(row["raw"])
    assert row["payload"] == '2,"the quote is never closed'


def test_csv_quote_left_open_at_the_end_of_the_file_keeps_every_earlier_row(
    landing: Path, day_dir: Path
) -> None:
    (day_dir / "tail.csv").write_bytes(b'id,text\n1,one\n2,two\n3,"open to the end\n4,four\n')

    result = read_landing_day(landing, DAY)

    assert result.docs["source_id"].to_list() == ["1", "2", "4"]
    row = only_row(result.quarantine)
    assert row["location"] == "line 4"
    assert "unterminated quote" in row["reason"]
    assert row["raw"] == b'3,"open to the end'


def test_csv_row_with_a_wrong_number_of_fields_is_one_quarantined_row(
    landing: Path, day_dir: Path
) -> None:
    (day_dir / "wide.csv").write_bytes(b"id,text\n1,fine\n2,too,many,fields\n3\n4,also fine\n")

    result = read_landing_day(landing, DAY)

    assert result.docs["source_id"].to_list() == ["1", "4"]
    rows = result.quarantine.sort("location").iter_rows(named=True)
    assert [(r["location"], r["reason"], r["raw"]) for r in rows] == [
        ("line 3", "row has 4 fields, the header has 2", b"2,too,many,fields"),
        ("line 4", "row has 1 fields, the header has 2", b"3"),
    ]


DEEP = "[" * 50_000 + "]" * 50_000


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"id": "d", "text": "t", "metadata": {"deep": ' + DEEP + "}}", "RecursionError"),
        ('{"id": "n", "text": "t", "count": ' + "9" * 5_000 + "}", "ValueError"),
        ('{"id": "o", "text": "t", "timestamp": ' + "9" * 400 + "}", "invalid timestamp"),
        ('{"id": "s", "text": "lone \\ud800 surrogate"}', "field 'text' is not valid Unicode"),
        ('{"id": "\\udfff", "text": "t"}', "field 'id' is not valid Unicode"),
        ('{"id": "k", "text": "t", "source": "\\ud83d"}', "field 'source' is not valid Unicode"),
    ],
    ids=["deep", "5,000 digits", "overflow", "surrogate", "surrogate id", "surrogate source"],
)
def test_a_jsonl_record_that_blows_up_the_parser_is_quarantined_alone(
    landing: Path, day_dir: Path, line: str, reason: str
) -> None:
    write_jsonl(day_dir / "a.jsonl", [{"id": "ok", "text": "fine"}, line])
    (day_dir / "b.csv").write_text("id,text\nc,the next file loads too\n", encoding="utf-8")

    result = read_landing_day(landing, DAY)

    assert sorted(result.docs["source_id"].to_list()) == ["c", "ok"]
    row = only_row(result.quarantine)
    assert reason in row["reason"]
    assert row["location"] == "line 2"
    assert row["raw"] == line.encode()  # the bytes as they arrived
    assert len(row["reason"]) <= 500


def test_nul_bytes_and_odd_encodings_in_a_csv_are_per_row(landing: Path, day_dir: Path) -> None:
    (day_dir / "odd.csv").write_bytes(
        b"id,text\n1,with a \x00 NUL\n2,caf\xe9 in Latin-1\n3,\xef\xbb\xbfplain\n"
    )

    result = read_landing_day(landing, DAY)

    assert dict(zip(result.docs["source_id"], result.docs["text"], strict=True)) == {
        "1": "with a \x00 NUL",  # kept as it came: the cleaning stage decides about NUL
        "3": "\ufeffplain",
    }
    row = only_row(result.quarantine)
    assert (row["location"], row["reason"]) == ("line 3", "row is not valid UTF-8")
    assert row["raw"] == b"2,caf\xe9 in Latin-1"


def test_a_parquet_row_python_cannot_hold_is_quarantined_alone(
    landing: Path, day_dir: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "text": ["before", "year 11,476", "after"],
            # 300 billion seconds: year 11476, past what a Python datetime holds
            "timestamp": pa.array([1_714_557_600, 300_000_000_000, None], pa.timestamp("s")),
        }
    )
    pq.write_table(table, day_dir / "far.parquet")

    result = read_landing_day(landing, DAY)

    assert result.docs["source_id"].to_list() == ["a", "c"]
    assert result.docs["event_time"].to_list() == [MAY_1_10H, None]
    row = only_row(result.quarantine)
    assert row["location"] == "row 2"
    assert row["reason"].startswith("cannot parse record: ")


def test_symbolic_links_are_refused_and_their_targets_never_read(
    tmp_path: Path, landing: Path, day_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NLP_TEST_SECRET", "hunter2-secret")
    secret = tmp_path / "outside" / "secret.jsonl"
    secret.parent.mkdir()
    write_jsonl(secret, [{"id": "s", "text": "hunter2-secret from outside"}])
    (day_dir / "environ.txt").symlink_to("/proc/self/environ")
    (day_dir / "secret.jsonl").symlink_to(secret)
    (day_dir / "linked_folder").symlink_to(secret.parent, target_is_directory=True)
    (day_dir / "real").mkdir()
    write_jsonl(day_dir / "real" / "ok.jsonl", [{"id": "1", "text": "a real file"}])
    (day_dir / "real" / "inside.jsonl").symlink_to(day_dir / "real" / "ok.jsonl")

    result = read_landing_day(landing, DAY)

    assert result.docs["text"].to_list() == ["a real file"]
    refused = {row["file"]: row for row in result.quarantine.iter_rows(named=True)}
    assert set(refused) == {
        "2024-05-01/environ.txt",
        "2024-05-01/secret.jsonl",
        "2024-05-01/linked_folder",
        "2024-05-01/real/inside.jsonl",
    }
    assert (
        "symbolic link to '/proc/self/environ': not followed"
        in (refused["2024-05-01/environ.txt"]["reason"])
    )
    for row in refused.values():
        assert row["reason"].startswith("symbolic link to "), row
        assert (row["location"], row["payload"], row["raw"]) == ("file", None, None)
    assert "hunter2" not in str(result.docs.to_dicts()) + str(result.quarantine.to_dicts())


def test_a_fifo_is_refused_without_blocking_and_a_file_outside_the_day_is_not_read(
    tmp_path: Path, landing: Path, day_dir: Path
) -> None:
    os.mkfifo(day_dir / "pipe.jsonl")
    elsewhere = write_jsonl(tmp_path / "loose.jsonl", [{"id": "1", "text": "loose"}])
    sneaky = day_dir / ".." / ".." / "loose.jsonl"

    result = read_landing_files([day_dir / "pipe.jsonl", elsewhere, sneaky], day=DAY, root=landing)

    assert result.docs.height == 0
    assert result.files_read == 0
    reasons = dict(zip(result.quarantine["file"], result.quarantine["reason"], strict=True))
    assert reasons == {
        "2024-05-01/pipe.jsonl": "not a regular file (fifo): not read",
        str(elsewhere): "outside the day folder 2024-05-01: not read",
        str(sneaky): "outside the day folder 2024-05-01: not read",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1722082021420", datetime(2024, 7, 27, 12, 7, 1, 420_000, tzinfo=UTC)),  # not 1722-08-20
        ("20240501", datetime(1970, 8, 23, 6, 21, 41, tzinfo=UTC)),  # epoch seconds, not ISO
        (" 1714557600.5 ", MAY_1_10H + timedelta(milliseconds=500)),
    ],
)
def test_digit_only_timestamps_are_epochs_never_iso(value: str, expected: datetime) -> None:
    assert parse_event_time(value) == expected


def test_epoch_milliseconds_in_a_csv_are_not_read_as_a_year(landing: Path, day_dir: Path) -> None:
    (day_dir / "export.csv").write_text("id,text,timestamp\n1,t,1722082021420\n")

    doc = only_row(read_landing_day(landing, DAY).docs)

    assert doc["event_time"] == datetime(2024, 7, 27, 12, 7, 1, 420_000, tzinfo=UTC)


# --- size caps, before parsing ---------------------------------------------------------------


@pytest.fixture
def small_caps() -> ingest.IngestCaps:
    return ingest.IngestCaps(file_bytes=10_000, record_bytes=100)


def test_a_jsonl_line_over_the_cap_is_quarantined_cut_to_the_cap(
    landing: Path, day_dir: Path, small_caps: ingest.IngestCaps
) -> None:
    long_line = json.dumps({"id": "big", "text": "x" * 500})
    write_jsonl(
        day_dir / "a.jsonl", [{"id": "1", "text": "short"}, long_line, {"id": "3", "text": "ok"}]
    )

    result = read_landing_day(landing, DAY, caps=small_caps)

    assert result.docs["source_id"].to_list() == ["1", "3"]
    row = only_row(result.quarantine)
    assert row["location"] == "line 2"
    assert row["reason"] == f"line of {len(long_line)} bytes is over the cap of 100 bytes"
    assert row["raw"] == long_line.encode()[:100]
    assert row["raw_size"] == len(long_line)


def test_caps_come_from_the_environment(
    landing: Path, day_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NLP_INGEST_MAX_RECORD_BYTES", "64")
    monkeypatch.setenv("NLP_INGEST_MAX_FILE_BYTES", "1000")
    line = json.dumps({"id": "1", "text": "y" * 100})
    write_jsonl(day_dir / "a.jsonl", [line])
    (day_dir / "b.txt").write_text("z" * 2_000)

    reasons = sorted(read_landing_day(landing, DAY).quarantine["reason"])

    assert reasons == [
        "file of 2000 bytes is over the cap of 1000 bytes",
        f"line of {len(line)} bytes is over the cap of 64 bytes",
    ]


def test_files_over_the_file_cap_are_one_quarantine_row_each_whatever_the_format(
    landing: Path, day_dir: Path
) -> None:
    caps = ingest.IngestCaps(file_bytes=2_000, record_bytes=1_000)
    write_jsonl(day_dir / "a.jsonl", [{"id": str(n), "text": "t" * 50} for n in range(100)])
    (day_dir / "b.csv").write_text("id,text\n" + "".join(f"{n},{'c' * 50}\n" for n in range(100)))
    pl.DataFrame(
        {"id": list(range(1000)), "text": [f"row {n}" for n in range(1000)]}
    ).write_parquet(day_dir / "c.parquet", compression="uncompressed")
    (day_dir / "d.txt").write_text("fits")

    result = read_landing_day(landing, DAY, caps=caps)

    assert result.docs["text"].to_list() == ["fits"]
    assert result.quarantine["location"].to_list() == ["file"] * 3
    for row in result.quarantine.iter_rows(named=True):
        size = (landing / row["file"]).stat().st_size
        assert row["reason"] == f"file of {size} bytes is over the cap of 2000 bytes"
        assert row["raw_size"] == size
        assert row["raw"] == (landing / row["file"]).read_bytes()[:1_000]


def test_csv_rows_parquet_cells_and_txt_files_over_the_record_cap_are_quarantined(
    landing: Path, day_dir: Path, small_caps: ingest.IngestCaps
) -> None:
    (day_dir / "a.csv").write_text(f'id,text\n1,ok\n2,"{"w" * 300}"\n3,ok too\n')
    pl.DataFrame({"id": ["p1", "p2"], "text": ["ok", "v" * 300]}).write_parquet(
        day_dir / "b.parquet"
    )
    (day_dir / "c.txt").write_text("u" * 300)

    result = read_landing_day(landing, DAY, caps=small_caps)

    assert sorted(result.docs["source_id"].to_list()) == ["1", "3", "p1"]
    rows = {row["file"]: row for row in result.quarantine.iter_rows(named=True)}
    csv_row = rows["2024-05-01/a.csv"]
    assert (csv_row["location"], csv_row["raw_size"]) == ("line 3", 304)
    assert csv_row["reason"] == "line of 304 bytes is over the cap of 100 bytes"
    assert csv_row["raw"] == f'2,"{"w" * 300}"'.encode()[:100]
    cell = rows["2024-05-01/b.parquet"]
    assert (cell["location"], cell["reason"]) == (
        "row 2",
        "cell 'text' of 300 bytes is over the cap of 100 bytes",
    )
    assert (cell["raw"], cell["raw_size"]) == (b"v" * 100, 300)
    txt = rows["2024-05-01/c.txt"]
    assert (txt["location"], txt["reason"]) == (
        "file",
        "file of 300 bytes is over the cap of 100 bytes",
    )


def test_memory_for_a_huge_line_is_bounded_by_the_cap(landing: Path, day_dir: Path) -> None:
    import tracemalloc

    huge = 40 * 1024 * 1024
    with (day_dir / "huge.jsonl").open("wb") as handle:
        handle.write(b'{"id": "1", "text": "small"}\n{"id": "2", "text": "')
        handle.write(b"h" * huge)
        handle.write(b'"}\n{"id": "3", "text": "small too"}\n')
    caps = ingest.IngestCaps(file_bytes=100 * 1024 * 1024, record_bytes=1024 * 1024)

    tracemalloc.start()
    try:
        result = read_landing_day(landing, DAY, caps=caps)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.docs["source_id"].to_list() == ["1", "3"]
    assert only_row(result.quarantine)["raw_size"] == huge + len('{"id": "2", "text": "') + 2
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 1 MiB cap"


# --- one contract for blank text ------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "   ", " \t\n\r ", "\u3000\u00a0\u2028", "\u200b\u200d\ufeff\u00ad", "\x00 \x00"]
)
def test_normalise_record_refuses_empty_whitespace_or_invisible_text(text: str) -> None:
    with pytest.raises(RecordError, match=r"^field 'text' is empty or whitespace only$"):
        ingest.normalise_record({"id": "1", "text": text}, default_source="s")


def test_blank_texts_are_quarantined_in_every_format(landing: Path, day_dir: Path) -> None:
    write_jsonl(day_dir / "a.jsonl", [{"id": "j", "text": " \u200b "}, {"id": "ok", "text": "x"}])
    (day_dir / "b.csv").write_text('id,text\nc,"  "\n', encoding="utf-8")
    pl.DataFrame({"id": ["p"], "text": ["\t"]}).write_parquet(day_dir / "c.parquet")
    (day_dir / "d.txt").write_text("\n\n  \n")

    result = read_landing_day(landing, DAY)

    assert result.docs["source_id"].to_list() == ["ok"]
    assert result.quarantine.height == 4
    assert set(result.quarantine["reason"]) == {"field 'text' is empty or whitespace only"}


def test_a_quoted_csv_cell_of_many_lines_over_the_cap_is_one_row_not_many(
    landing: Path, day_dir: Path, small_caps: ingest.IngestCaps
) -> None:
    cell = "\n".join(['a line of a long quoted cell, with ""quotes"" inside'] * 10)
    row = f'2,"{cell}"'
    (day_dir / "long.csv").write_text(f"id,text\n1,ok\n{row}\n3,ok too\n")

    result = read_landing_day(landing, DAY, caps=small_caps)

    assert result.docs["source_id"].to_list() == ["1", "3"]
    quarantined = only_row(result.quarantine)
    assert quarantined["location"] == "line 3"
    assert quarantined["reason"] == f"row of {len(row)} bytes is over the cap of 100 bytes"
    assert (quarantined["raw"], quarantined["raw_size"]) == (row.encode()[:100], len(row))


def test_an_unterminated_quote_followed_by_more_than_the_cap_loses_only_its_line(
    landing: Path, day_dir: Path, small_caps: ingest.IngestCaps
) -> None:
    plain = "".join(f"{n},plain row number {n} without any quote\n" for n in range(2, 9))
    (day_dir / "late.csv").write_text(
        f'id,text\n1,"broken\n{plain}9,"multi\nline"\n10,ok\n', encoding="utf-8"
    )

    result = read_landing_day(landing, DAY, caps=small_caps)

    assert result.docs["source_id"].to_list() == [str(n) for n in range(2, 11)]
    assert result.docs.filter(pl.col("source_id") == "9")["text"].item() == "multi\nline"
    row = only_row(result.quarantine)
    assert (row["location"], row["raw"]) == ("line 2", b'1,"broken')
    assert row["reason"].startswith("malformed CSV row: unterminated quote")


def test_an_unterminated_quote_whose_row_passes_the_cap_on_a_quoted_line_loses_only_its_line(
    landing: Path, day_dir: Path, small_caps: ingest.IngestCaps
) -> None:
    """Found by the property suite: the line that passes the cap opens a quoted cell; the open
    quote before it must not be taken as closed there."""
    quoted = "3,\"a quoted cell long enough to pass the cap of this test's CSV rows"
    (day_dir / "q.csv").write_text(
        f'id,text\n1,"broken\n2,{"p" * 50}\n{quoted}\non two lines"\n', encoding="utf-8"
    )

    result = read_landing_day(landing, DAY, caps=small_caps)

    assert result.docs["source_id"].to_list() == ["2", "3"]
    assert result.docs["text"][1] == quoted[3:] + "\non two lines"
    row = only_row(result.quarantine)
    assert (row["location"], row["raw"]) == ("line 2", b'1,"broken')


def test_an_unterminated_quote_before_a_quoted_cell_past_the_cut_of_a_long_line(
    landing: Path, day_dir: Path, small_caps: ingest.IngestCaps
) -> None:
    """Found by the property suite: the quote that shows the broken row is broken lies past the
    cap on an over-long line, so the check reads it from the whole line, not the cut."""
    (day_dir / "q.csv").write_text(
        f'id,text\n1,"broken\n2,{"é" * 150},"x\nstill the cell"\n3,ok\n', encoding="utf-8"
    )

    result = read_landing_day(landing, DAY, caps=small_caps)

    assert result.docs["source_id"].to_list() == ["3"]
    assert result.quarantine.sort("location")[["location", "reason"]].rows() == [
        ("line 2", "malformed CSV row: unterminated quote (the row passes the cap of 100 bytes)"),
        ("line 3", "row of 321 bytes is over the cap of 100 bytes"),
    ]


def test_a_parquet_row_group_over_the_file_cap_is_not_read_and_each_row_is_quarantined(
    landing: Path, day_dir: Path
) -> None:
    """A small file can hold a huge row group (compression): its size uncompressed counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": ["1", "2", "3", "4"], "text": ["a", "b", "x" * 3_000, "y" * 3_000]})
    pq.write_table(
        table, day_dir / "zip.parquet", row_group_size=2, compression="zstd", write_statistics=False
    )
    caps = ingest.IngestCaps(file_bytes=5_000, record_bytes=4_000)
    assert (day_dir / "zip.parquet").stat().st_size < caps.file_bytes

    result = read_landing_day(landing, DAY, caps=caps)

    assert result.docs["source_id"].to_list() == ["1", "2"]
    assert result.quarantine["location"].to_list() == ["row 3", "row 4"]
    for reason in result.quarantine["reason"]:
        assert reason.startswith("row group 1 of ")
        assert reason.endswith(" bytes is over the cap of 5000 bytes")


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("metadata", "error"),
    [({"n": 10**5_000}, "ValueError"), ({"deep": _nested(100_000)}, "RecursionError")],
    ids=["5,000-digit integer", "nested 100,000 deep"],
)
def test_normalise_record_refuses_metadata_json_cannot_write_with_a_record_error(
    metadata: dict, error: str
) -> None:
    """What json.dumps raises for one record's metadata is that record's RecordError (the one
    exception Kafka validation and the landing reader catch), never anything else."""
    with pytest.raises(RecordError, match=f"^invalid record: {error}: "):
        ingest.normalise_record({"id": "1", "text": "t", "metadata": metadata}, default_source="s")
