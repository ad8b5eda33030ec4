"""The lake on Delta Lake (`nlp_assets.lake.Lake`) and the IO manager every stage uses: parts of
a day, whole-day and multi-day writes, types, app transactions, time travel, readers and writers
racing, killed writers, and a model-based check of every write against a plain dict.
The day leases (`DayLocks`): `test_lake_locks.py`."""

from __future__ import annotations

import multiprocessing
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from polars.testing import assert_frame_equal

import nlp_assets.resources.lake as lake_resources
from nlp_assets import catalog
from nlp_assets.lake import DAY_PART, Lake
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.lake import LakeIOManager, LakeResource, markdown_preview, run_part

DAY = "2026-03-01"
ASSET = "cleaned_text"


def frame(*doc_ids: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"doc_id": list(doc_ids), "n": [len(d) for d in doc_ids]},
        schema={"doc_id": pl.String, "n": pl.Int64},
    )


def data_files(lake: Lake, asset: str = ASSET) -> set[str]:
    """Every file under the table's folder but its log (live or not, staging files too)."""
    folder = Path(lake.table_uri(asset))
    return {str(p) for p in folder.rglob("*") if p.is_file() and "_delta_log" not in p.parts}


def live_files(lake: Lake, asset: str = ASSET) -> set[str]:
    """The data files the table's current version lists."""
    table = lake.table(asset)
    assert table is not None
    return {uri.removeprefix("file://") for uri in table.file_uris()}


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


# Lake: writing -------------------------------------------------------------------------------
def test_named_part_is_written_beside_the_others(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a", "b"))
    lake.write(ASSET, DAY, frame("c"), part="batch-0900")
    lake.write(ASSET, DAY, frame("d"), part="batch-1000")

    assert lake.part_names(ASSET, DAY) == ["batch-0900", "batch-1000", "day"]
    assert sorted(lake.read_day(ASSET, DAY)["doc_id"]) == ["a", "b", "c", "d"]
    assert lake.day_rows(ASSET, DAY) == 4


def test_rewriting_a_named_part_replaces_only_that_part(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a", "b"))
    lake.write(ASSET, DAY, frame("c"), part="batch-0900")
    lake.write(ASSET, DAY, frame("d"), part="batch-1000")
    before = lake.version(ASSET)

    result = lake.write(ASSET, DAY, frame("c2", "c3"), part="batch-0900")  # a retried batch

    assert result.version == lake.version(ASSET) == (before or 0) + 1  # one commit
    assert result.rows == 2 and not result.skipped
    assert lake.part_names(ASSET, DAY) == ["batch-0900", "batch-1000", "day"]
    assert_frame_equal(lake.read_part(ASSET, DAY, "batch-0900"), frame("c2", "c3"))
    assert_frame_equal(lake.read_part(ASSET, DAY, "batch-1000"), frame("d"))
    assert_frame_equal(lake.read_parts(ASSET, DAY)[DAY_PART], frame("a", "b"))


def test_whole_day_part_replaces_every_other_part_of_that_day(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"), part="batch-0900")
    lake.write(ASSET, DAY, frame("b"), part="batch-1000")
    lake.write(ASSET, "2026-03-02", frame("other day"), part="batch-0900")
    lake.write("other_asset", DAY, frame("other asset"))

    lake.write(ASSET, DAY, frame("a", "b", "late"))

    assert lake.part_names(ASSET, DAY) == ["day"]
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("a", "b", "late"))
    # other days and other assets are not touched
    assert_frame_equal(lake.read_day(ASSET, "2026-03-02"), frame("other day"))
    assert_frame_equal(lake.read_day("other_asset", DAY), frame("other asset"))


def test_rewriting_the_whole_day_replaces_it(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"))
    lake.write(ASSET, DAY, frame("b"))
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("b"))


@pytest.mark.parametrize("part", ["", "../day", "a/b", "batch 1", "x*", "é", "a' OR '1'='1"])
def test_invalid_part_name_is_refused(lake: Lake, part: str) -> None:
    with pytest.raises(ValueError, match="invalid part name"):
        lake.write(ASSET, DAY, frame("a"), part=part)
    assert not lake.exists(ASSET)


def test_valid_part_names(lake: Lake) -> None:
    for part in ("batch-0900", "offsets_12.40", "window=0900-1000"):
        lake.write(ASSET, DAY, frame(part), part=part)
    assert lake.part_names(ASSET, DAY) == ["batch-0900", "offsets_12.40", "window=0900-1000"]
    assert_frame_equal(lake.read_part(ASSET, DAY, "window=0900-1000"), frame("window=0900-1000"))


def test_a_frame_with_a_part_column_is_refused(lake: Lake) -> None:
    with pytest.raises(ValueError, match="column 'part' is the lake's own"):
        lake.write(ASSET, DAY, frame("a").with_columns(part=pl.lit("x")))
    assert not lake.exists(ASSET)


def test_rows_of_another_day_are_refused(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"))
    stray = frame("a", "b").with_columns(
        ingest_date=pl.Series([date(2026, 3, 1), date(2026, 3, 2)])
    )
    with pytest.raises(ValueError, match=r"rows of days \['2026-03-02'\] outside the days"):
        lake.write(ASSET, DAY, stray)
    with pytest.raises(ValueError, match=r"rows of days \['2026-03-02'\] outside the days"):
        lake.write_days(ASSET, [DAY], stray)
    assert lake.version(ASSET) == 0  # nothing committed
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("a"))


def test_unpartitioned_asset_round_trips_as_one_table(lake: Lake) -> None:
    lake.write("sentiment_model", None, frame("w"))
    lake.write("sentiment_model", None, frame("x", "y"))  # replaced whole
    assert_frame_equal(lake.read_part("sentiment_model", None), frame("x", "y"))
    assert not lake.is_daily("sentiment_model")
    assert lake.tables() == ["sentiment_model"]


def test_quarantine_is_a_table_beside_the_stages(lake: Lake) -> None:
    lake.write_quarantine("raw_text", DAY, frame("bad"), part="batch-0900")
    folder = Path(lake.table_uri("quarantine/raw_text"))
    assert folder == Path(lake.root.path) / "quarantine" / "raw_text"
    assert (folder / "_delta_log").is_dir()
    assert lake.tables() == ["quarantine/raw_text"]
    assert lake.part_names("quarantine/raw_text", DAY) == ["batch-0900"]
    assert_frame_equal(lake.read_quarantine("raw_text", date.fromisoformat(DAY)), frame("bad"))
    assert lake.read_quarantine("raw_text", "2026-03-02").is_empty()
    assert lake.read_quarantine("never_quarantined", DAY).is_empty()


def test_write_days_replaces_exactly_the_listed_days_in_one_commit(lake: Lake) -> None:
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        lake.write(ASSET, day, frame(f"old-{day}"), part="batch-0900")
    before = lake.version(ASSET)
    days = [date(2026, 3, 1), date(2026, 3, 2)]
    new = frame("n1", "n2").with_columns(ingest_date=pl.Series([date(2026, 3, 1)] * 2))

    result = lake.write_days(ASSET, days, new)

    assert result.version == lake.version(ASSET) == (before or 0) + 1
    # the table's first write had no ingest_date, so reads leave it out (the lake's own)
    assert_frame_equal(lake.read_day(ASSET, "2026-03-01"), new.drop("ingest_date"))
    assert lake.read_day(ASSET, "2026-03-02").is_empty()  # listed, no rows: emptied
    assert lake.read_day(ASSET, "2026-03-03")["doc_id"].to_list() == ["old-2026-03-03"]
    assert lake.rows_by_day(ASSET) == {"2026-03-01": 2, "2026-03-03": 1}
    assert lake.part_names(ASSET, "2026-03-01") == [DAY_PART]


def test_write_days_needs_an_ingest_date(lake: Lake) -> None:
    with pytest.raises(ValueError, match="needs an ingest_date"):
        lake.write_days(ASSET, ["2026-03-01", "2026-03-02"], frame("a"))
    assert not lake.exists(ASSET)


# Lake: types --------------------------------------------------------------------------------
TYPED_SCHEMA = {
    "doc_id": pl.String,
    "token_ids": pl.List(pl.UInt32),
    "embedding": pl.Array(pl.Float32, 4),
    "raw": pl.Binary,
    "published": pl.Date,
    "meta": pl.Struct({"source": pl.String, "score": pl.Float64}),
    "note": pl.Null,
}


def typed(doc_ids: list[str], note: list[str | None] | None = None) -> pl.DataFrame:
    rows = len(doc_ids)
    data = pl.DataFrame(
        {
            "doc_id": doc_ids,
            "token_ids": [[i, 2**32 - 1, 0][: i % 3 + 1] for i in range(rows)],
            "embedding": [[i + 0.5, -1.0, 0.0, 2.25] for i in range(rows)],
            "raw": [bytes([i, 0, 255]) for i in range(rows)],
            "published": [date(2026, 2, 1 + i) for i in range(rows)],
            "meta": [{"source": f"s{i}", "score": i / 4} for i in range(rows)],
            "note": [None] * rows,
        },
        schema=TYPED_SCHEMA,
    )
    return data if note is None else data.with_columns(note=pl.Series(note, dtype=pl.String))


def test_types_round_trip_exactly_and_other_readers_see_delta_types(lake: Lake) -> None:
    first = typed(["a", "b", "c"])
    lake.write(ASSET, DAY, first, part="p1")
    stored = lake.read_part(ASSET, DAY, "p1")
    assert stored.schema == {**TYPED_SCHEMA, "note": pl.String}  # the Null column, as String
    assert stored["note"].null_count() == 3
    assert_frame_equal(stored.drop("note"), first.drop("note"))

    later = typed(["d", "e"], note=["filled", None])  # the Null column later filled
    lake.write(ASSET, DAY, later, part="p2")
    day = lake.read_day(ASSET, DAY).sort("doc_id")
    expected = pl.concat([first.with_columns(pl.col("note").cast(pl.String)), later])
    assert_frame_equal(day, expected)
    assert day.schema["token_ids"] == pl.List(pl.UInt32)
    assert day.schema["embedding"] == pl.Array(pl.Float32, 4)
    assert day["token_ids"].to_list()[1] == [1, 2**32 - 1]

    # another engine reads the same table in Delta's own types, without a List/Array mismatch
    outside = pl.read_delta(lake.table_uri(ASSET)).sort("doc_id")
    assert outside.height == 5
    assert outside.schema["embedding"] == pl.List(pl.Float32)
    assert outside.schema["token_ids"] == pl.List(pl.Int64)
    assert outside.schema["ingest_date"] == pl.Date
    assert outside["part"].to_list() == ["p1", "p1", "p1", "p2", "p2"]
    assert outside["embedding"].to_list() == day["embedding"].to_list()
    assert outside["token_ids"].to_list() == day["token_ids"].to_list()
    assert outside["note"].to_list() == [None, None, None, "filled", None]
    assert pl.scan_delta(lake.table_uri(ASSET)).select(pl.len()).collect().item() == 5


# Lake: app transactions and time travel --------------------------------------------------------
def test_a_replayed_app_transaction_is_skipped_and_a_higher_one_commits(lake: Lake) -> None:
    first = lake.write(ASSET, DAY, frame("a"), part="kafka-0", txn=("topic-a", 5))
    assert not first.skipped and lake.transaction_version(ASSET, "topic-a") == 5
    version = lake.version(ASSET)

    for replayed in (5, 4):  # the same range again, and an older one
        again = lake.write(ASSET, DAY, frame("replay"), part="kafka-0", txn=("topic-a", replayed))
        assert again.skipped and again.rows == 0
        assert lake.version(ASSET) == version  # no commit
    assert_frame_equal(lake.read_part(ASSET, DAY, "kafka-0"), frame("a"))

    higher = lake.write(ASSET, DAY, frame("b"), part="kafka-1", txn=("topic-a", 6))
    assert not higher.skipped and higher.version == (version or 0) + 1
    assert lake.transaction_version(ASSET, "topic-a") == 6
    # another app id is independent
    other = lake.write(ASSET, DAY, frame("c"), part="kafka-2", txn=("topic-b", 1))
    assert not other.skipped
    assert sorted(lake.read_day(ASSET, DAY)["doc_id"]) == ["a", "b", "c"]


def test_a_lake_with_part_txn_carries_it_on_that_part_only(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    run = Lake(root, part_txn=("kafka-7", "topic-a", 7))
    assert not run.write(ASSET, DAY, frame("a"), part="kafka-7").skipped
    assert run.transaction_version(ASSET, "topic-a") == 7
    version = run.version(ASSET)

    retry = Lake(root, part_txn=("kafka-7", "topic-a", 7))  # the retried run of that range
    assert retry.write(ASSET, DAY, frame("dup"), part="kafka-7").skipped
    assert retry.version(ASSET) == version
    # other parts (and the whole day) of the same run are written as usual
    assert not retry.write(ASSET, DAY, frame("b"), part="kafka-8").skipped
    assert retry.transaction_version(ASSET, "topic-a") == 7
    assert sorted(retry.read_day(ASSET, DAY)["doc_id"]) == ["a", "b"]
    assert (
        not Lake(root, part_txn=("kafka-7", "topic-a", 8))
        .write(ASSET, DAY, frame("a2"), part="kafka-7")
        .skipped
    )
    assert sorted(retry.read_day(ASSET, DAY)["doc_id"]) == ["a2", "b"]


def test_time_travel_by_version_and_by_timestamp(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("v0"))
    time.sleep(0.05)  # commit times a clear interval apart (not an assertion on time)
    between = datetime.now(UTC)
    time.sleep(0.05)
    lake.write(ASSET, DAY, frame("v1"))
    lake.write(ASSET, DAY, frame("v2"), part="p")

    assert_frame_equal(lake.read_day(ASSET, DAY, as_of=0), frame("v0"))
    assert_frame_equal(lake.read_day(ASSET, DAY, as_of=1), frame("v1"))
    assert sorted(lake.read_day(ASSET, DAY)["doc_id"]) == ["v1", "v2"]
    assert_frame_equal(lake.read_day(ASSET, DAY, as_of=between.isoformat()), frame("v0"))
    assert_frame_equal(lake.read_day(ASSET, DAY, as_of=between), frame("v0"))
    naive = between.replace(tzinfo=None).isoformat()  # read as UTC
    assert_frame_equal(lake.read_day(ASSET, DAY, as_of=naive), frame("v0"))
    assert_frame_equal(lake.read_part(ASSET, DAY, "day", as_of=0), frame("v0"))
    assert lake.read_parts(ASSET, DAY, as_of=1).keys() == {"day"}
    assert lake.rows_by_day(ASSET, as_of=0) == {DAY: 1}


# Lake: reading -------------------------------------------------------------------------------
def test_read_day_concatenates_all_parts(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"), part="batch-0900")
    lake.write(ASSET, DAY, frame("b", "c"), part="batch-1000")
    day = lake.read_day(ASSET, DAY)
    assert day.columns == ["doc_id", "n"]  # the lake's own columns are not returned
    assert sorted(day["doc_id"]) == ["a", "b", "c"]


def test_read_part_reads_only_that_part(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"), part="batch-0900")
    lake.write(ASSET, DAY, frame("b"), part="batch-1000")
    assert_frame_equal(lake.read_part(ASSET, DAY, "batch-1000"), frame("b"))
    assert lake.read_part(ASSET, DAY, "batch-1100").is_empty()


def test_read_days_skips_absent_days(lake: Lake) -> None:
    lake.write(ASSET, "2026-03-01", frame("a"))
    lake.write(ASSET, "2026-03-03", frame("c"), part="batch-0900")
    lake.write(ASSET, "2026-03-03", frame("d"), part="batch-1000")
    lake.write(ASSET, "2026-03-09", frame("outside"))

    days = [date(2026, 3, d) for d in range(1, 5)]  # dates or ISO strings both work
    assert sorted(lake.read_days(ASSET, days)["doc_id"]) == ["a", "c", "d"]
    assert lake.read_days(ASSET, ["2026-04-01", "2026-04-02"]).is_empty()
    assert lake.read_days("never_written", days).is_empty()


def test_a_day_can_be_read_without_some_parts_and_columns(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a", "b"))
    lake.write(ASSET, DAY, frame("c"), part="batch-0900")
    others = lake.read_day(ASSET, DAY, columns=["doc_id"], exclude_parts=["batch-0900"])
    assert others.columns == ["doc_id"] and others["doc_id"].to_list() == ["a", "b"]
    assert lake.read_day(ASSET, DAY, exclude_parts=["day", "batch-0900"]).is_empty()
    rest = lake.read_day_columns(ASSET, DAY, ["doc_id"], exclude_parts=["day"])
    assert rest.columns == ["doc_id"] and rest["doc_id"].to_list() == ["c"]
    assert {k: v["doc_id"].to_list() for k, v in lake.read_parts(ASSET, DAY).items()} == {
        "batch-0900": ["c"],
        "day": ["a", "b"],
    }
    assert lake.read_parts(ASSET, "2026-03-09") == {}


def test_a_missing_table_says_what_to_materialise(lake: Lake) -> None:
    with pytest.raises(FileNotFoundError) as day_error:
        lake.read_day(ASSET, DAY)
    with pytest.raises(FileNotFoundError) as part_error:
        lake.read_part(ASSET, DAY, "batch-0900")
    with pytest.raises(FileNotFoundError) as whole_error:
        lake.read_part("sentiment_model", None)
    for error, asset in ((day_error, ASSET), (part_error, ASSET), (whole_error, "sentiment_model")):
        message = str(error.value)
        assert asset in message and lake.table_uri(asset) in message
        assert "materialise" in message


def test_missing_day_can_be_read_as_empty(lake: Lake) -> None:
    assert lake.read_day(ASSET, DAY, missing_ok=True).is_empty()  # no table
    lake.write(ASSET, "2026-03-02", frame("a"))
    assert lake.read_day(ASSET, DAY).is_empty()  # a table without that day


# LakeIOManager -------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def io_manager(root: Path) -> LakeIOManager:
    return LakeIOManager(lake=LakeResource(root=str(root)))


def output_context(asset: str = ASSET, partition_key: str | None = DAY) -> dg.OutputContext:
    return dg.build_output_context(
        asset_key=asset,
        partition_key=partition_key,
        asset_partitions_def=daily_partitions if partition_key else None,
    )


def input_context(
    asset: str = ASSET,
    partition_key: str | None = DAY,
    *,
    key_range: dg.PartitionKeyRange | None = None,
    metadata: dict[str, str] | None = None,
) -> dg.InputContext:
    partitioned = partition_key is not None or key_range is not None
    return dg.build_input_context(
        asset_key=asset,
        partition_key=partition_key,
        asset_partition_key_range=key_range,
        asset_partitions_def=daily_partitions if partitioned else None,
        definition_metadata=metadata,
    )


def test_handle_output_writes_the_day_where_the_lake_says(
    io_manager: LakeIOManager, root: Path
) -> None:
    io_manager.handle_output(output_context(), frame("a", "b"))
    assert_frame_equal(Lake(root).read_part(ASSET, DAY), frame("a", "b"))
    assert Lake(root).part_names(ASSET, DAY) == ["day"]


def test_handle_output_records_rows_day_rows_version_schema_preview_and_path(
    io_manager: LakeIOManager, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Lake(root).write(ASSET, DAY, frame("x", "y"), part="batch-0900")
    monkeypatch.setattr(lake_resources, "run_part", lambda context: "batch-1000")
    context = output_context()
    io_manager.handle_output(context, frame("a", "b", "c"))

    metadata = context.get_logged_metadata()
    assert metadata["dagster/row_count"] == dg.MetadataValue.int(3)
    assert metadata["dagster/partition_row_count"] == dg.MetadataValue.int(5)  # the day's rows
    assert metadata["table_version"] == dg.MetadataValue.int(1)
    assert Lake(root).version(ASSET) == 1
    assert metadata["path"] == dg.MetadataValue.path(Lake(root).table_uri(ASSET))
    schema = metadata["dagster/column_schema"]
    expected = catalog.materialized_column_schema(dg.AssetKey(ASSET), frame("a"))
    assert schema == dg.MetadataValue.table_schema(expected)
    assert {c.name: c.type for c in schema.schema.columns if c.name in ("doc_id", "n")} == {
        "doc_id": "String",
        "n": "Int64",
    }
    preview = metadata["preview"]
    assert isinstance(preview, dg.MarkdownMetadataValue)
    assert preview.value == markdown_preview(frame("a", "b", "c"))
    assert preview.value.splitlines()[0] == "| doc_id | n |"


def test_load_input_returns_what_was_stored(io_manager: LakeIOManager) -> None:
    io_manager.handle_output(output_context(), frame("a", "b"))
    assert_frame_equal(io_manager.load_input(input_context()), frame("a", "b"))


def test_unpartitioned_asset_round_trips_through_the_io_manager(
    io_manager: LakeIOManager, root: Path
) -> None:
    io_manager.handle_output(output_context("sentiment_model", None), frame("w"))
    assert (root / "sentiment_model" / "_delta_log").is_dir()
    assert_frame_equal(io_manager.load_input(input_context("sentiment_model", None)), frame("w"))


def test_whole_day_run_reads_every_part_of_the_day(io_manager: LakeIOManager, root: Path) -> None:
    Lake(root).write(ASSET, DAY, frame("a"), part="batch-0900")
    Lake(root).write(ASSET, DAY, frame("b"), part="batch-1000")
    assert sorted(io_manager.load_input(input_context())["doc_id"]) == ["a", "b"]


def test_micro_batch_reads_its_part_unless_the_input_asks_for_the_day(
    io_manager: LakeIOManager, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Lake(root).write(ASSET, DAY, frame("a"), part="batch-0900")
    Lake(root).write(ASSET, DAY, frame("b"), part="batch-1000")
    monkeypatch.setattr(lake_resources, "run_part", lambda context: "batch-1000")

    assert_frame_equal(io_manager.load_input(input_context()), frame("b"))
    whole_day = io_manager.load_input(input_context(metadata=lake_resources.SCOPE_DAY))
    assert sorted(whole_day["doc_id"]) == ["a", "b"]


def test_micro_batch_writes_its_part(
    io_manager: LakeIOManager, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Lake(root).write(ASSET, DAY, frame("a"))
    monkeypatch.setattr(lake_resources, "run_part", lambda context: "batch-1000")
    io_manager.handle_output(output_context(), frame("b"))
    assert Lake(root).part_names(ASSET, DAY) == ["batch-1000", "day"]
    assert_frame_equal(Lake(root).read_part(ASSET, DAY, "batch-1000"), frame("b"))


def test_range_of_partitions_loads_as_one_frame(io_manager: LakeIOManager, root: Path) -> None:
    lake = Lake(root)
    lake.write(ASSET, "2026-03-01", frame("a"))
    lake.write(ASSET, "2026-03-02", frame("b"), part="batch-0900")
    lake.write(ASSET, "2026-03-02", frame("c"), part="batch-1000")
    lake.write(ASSET, "2026-03-03", frame("d"))
    lake.write(ASSET, "2026-03-04", frame("outside"))

    key_range = dg.PartitionKeyRange("2026-03-01", "2026-03-03")
    loaded = io_manager.load_input(input_context(partition_key=None, key_range=key_range))
    assert sorted(loaded["doc_id"]) == ["a", "b", "c", "d"]


def test_missing_table_fails_the_load_with_a_hint(io_manager: LakeIOManager) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{ASSET} has no table at .*materialise"):
        io_manager.load_input(input_context())


@pytest.mark.parametrize("value", [None, {"doc_id": ["a"]}, pl.LazyFrame({"doc_id": ["a"]})])
def test_non_dataframe_output_is_refused_with_the_asset_name(
    io_manager: LakeIOManager, root: Path, value: object
) -> None:
    with pytest.raises(TypeError, match=rf"{ASSET} must return a polars DataFrame"):
        io_manager.handle_output(output_context(), value)
    assert not root.exists()


def test_run_part_without_a_run_is_the_whole_day() -> None:
    assert run_part(output_context()) == DAY_PART
    assert run_part(input_context()) == DAY_PART


# Lake: readers racing a writer see one committed state, never a mix --------------------------
ROWS = 4
MICRO = ("p0", "p1", "p2")


def block(name: str) -> list[str]:
    return [f"{name}-{i}" for i in range(ROWS)]


def writes_of_generation(g: int) -> list[tuple[str, list[str]]]:
    """A whole-day rewrite, three micro-batch parts, then a retried micro-batch (p0 again)."""
    return [
        (DAY_PART, block(f"g{g}-day")),
        *((part, block(f"g{g}-{part}")) for part in MICRO),
        ("p0", block(f"g{g}-p0retry")),
    ]


def states_after(writes: list[tuple[str, list[str]]]) -> list[tuple[str, ...]]:
    """Each state of the day (its doc_ids, sorted) after each write, in order."""
    current: dict[str, list[str]] = {}
    states = []
    for part, ids in writes:
        current = {DAY_PART: ids} if part == DAY_PART else {**current, part: ids}
        states.append(tuple(sorted(i for rows in current.values() for i in rows)))
    return states


def day_ids(lake: Lake) -> tuple[str, ...]:
    day = lake.read_day(ASSET, DAY, missing_ok=True)
    return tuple(sorted(day["doc_id"])) if day.width else ()


def test_readers_racing_a_writer_see_exactly_one_committed_state(lake: Lake) -> None:
    writes = [w for g in range(12) for w in writes_of_generation(g)]
    valid = {(), *states_after(writes)}
    done = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for part, ids in writes:
                lake.write(ASSET, DAY, frame(*ids), part)
        except BaseException as error:
            failures.append(error)
        finally:
            done.set()

    def reader(seen: set[tuple[str, ...]], mixed: list[str]) -> None:
        reads = 0
        while not done.is_set() or reads < 5:
            reads += 1
            try:
                ids = day_ids(lake)
            except Exception as error:  # a listed file gone under the reader
                mixed.append(f"{type(error).__name__}: {error}")
                continue
            seen.add(ids)
            if ids not in valid:
                mixed.append(f"{len(ids)} rows, no committed state: {ids[:3]}...")

    seen: set[tuple[str, ...]] = set()
    mixed: list[str] = []
    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader, args=(seen, mixed)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert mixed == [], f"{len(mixed)} reads saw a mix, e.g. {mixed[:3]}"
    assert len(seen) >= 3, "the readers must have raced several writes"
    assert day_ids(lake) == states_after(writes)[-1]
    assert lake.version(ASSET) == len(writes) - 1  # one commit a write


# Lake: concurrent writers in separate processes ----------------------------------------------
WRITERS, PARTS_EACH = 4, 5


def test_concurrent_writers_of_one_day_in_processes_lose_nothing(tmp_path: Path) -> None:
    """4 processes each write 5 parts of the same day at once: every commit that lost the race
    is applied again on top, so the day equals the same writes done one after another."""
    jobs = [
        (ASSET, DAY, frame(*block(f"w{w}-{i}")), f"w{w}-{i}")
        for w in range(WRITERS)
        for i in range(PARTS_EACH)
    ]
    lake = Lake(tmp_path / "concurrent")
    spawn = multiprocessing.get_context("spawn")  # no fork of a process running tokio threads
    with spawn.Pool(WRITERS) as pool:
        results = pool.starmap(lake.write, jobs, chunksize=PARTS_EACH)

    sequential = Lake(tmp_path / "sequential")
    for job in jobs:
        sequential.write(*job)

    assert all(not r.skipped and r.rows == ROWS for r in results)
    assert lake.version(ASSET) == len(jobs) - 1  # every write its own commit, none lost
    assert lake.part_names(ASSET, DAY) == sequential.part_names(ASSET, DAY)
    assert len(lake.part_names(ASSET, DAY)) == WRITERS * PARTS_EACH
    got = lake.read_day(ASSET, DAY).sort("doc_id")
    assert_frame_equal(got, sequential.read_day(ASSET, DAY).sort("doc_id"))
    assert got["doc_id"].n_unique() == got.height == WRITERS * PARTS_EACH * ROWS


# Lake: a writer SIGKILLed at random points -----------------------------------------------------
KILLED_WRITER = r"""
import sys
import polars as pl
from nlp_assets.lake import Lake

root, prefix, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
lake = Lake(root)
print("ready", flush=True)
for i in range(10_000):
    part = f"{prefix}-{i}"
    ids = [f"{part}-{k}" for k in range(rows)]
    data = pl.DataFrame({"doc_id": ids, "n": list(range(rows))})
    lake.write("cleaned_text", "2026-03-01", data, part)
    print("committed", part, flush=True)
"""


#: rows of each part the killed writer writes
KILLED_ROWS = 2_000


def killed_part_rows(part: str) -> list[str]:
    return [f"{part}-{k}" for k in range(KILLED_ROWS)]


def test_a_writer_killed_at_random_points_leaves_only_whole_parts(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    lake = Lake(root)
    lake.write(ASSET, DAY, frame("base"), part="base")
    chance = random.Random(22)
    committed: list[str] = []
    attempted: set[str] = {"base"}
    for round_ in range(3):
        prefix = f"r{round_}"
        writer = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(root), prefix, str(KILLED_ROWS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready", writer.stderr
        delay = chance.uniform(0.05, 0.6)
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)  # no cleanup, no finally: a pod OOM-killed
        out, _ = writer.communicate(timeout=60)
        assert writer.returncode == -signal.SIGKILL
        reported = [line.split()[1] for line in out.splitlines() if line.startswith("committed")]
        committed += reported
        # the parts it had started: all reported, and the one it was writing when killed
        attempted |= {*reported, f"{prefix}-{len(reported)}"}

        present = lake.read_parts(ASSET, DAY)
        assert set(committed) <= set(present), f"round {round_} after {delay:.2f}s lost a part"
        assert set(present) <= attempted | {"base"}
        for part, rows in present.items():  # whole, or absent: never half there
            expected = [part] if not part.startswith("r") else killed_part_rows(part)
            assert sorted(rows["doc_id"]) == sorted(expected), f"part {part} is not whole"
        lake.write(ASSET, DAY, frame(f"after-{round_}"), part=f"after-{round_}")  # still writable
        attempted.add(f"after-{round_}")

    before = lake.read_day(ASSET, DAY).sort("doc_id")
    # a writer killed after its file was uploaded and before its commit (a window the kills
    # above rarely hit: delta-rs writes a file in one put) leaves a file no version lists
    orphan = Path(lake.table_uri(ASSET)) / f"ingest_date={DAY}" / "part-00000-killed.parquet"
    frame("orphan").write_parquet(orphan)
    assert "orphan" not in lake.read_day(ASSET, DAY)["doc_id"].to_list()
    removed = lake.vacuum(ASSET, 0)
    assert data_files(lake) == live_files(lake)  # only the live files are left
    assert any(r.endswith("part-00000-killed.parquet") for r in removed)
    assert not orphan.exists()
    assert_frame_equal(lake.read_day(ASSET, DAY).sort("doc_id"), before)
    assert len(committed) >= 1, "the writer never committed before being killed"


def test_compact_and_vacuum_keep_the_rows_and_leave_only_live_files(lake: Lake) -> None:
    for i in range(6):
        lake.write(ASSET, DAY, frame(f"a{i}", f"b{i}"), part=f"p{i}")
    lake.write(ASSET, DAY, frame("a0-retry"), part="p0")
    before = lake.read_day(ASSET, DAY).sort("doc_id")
    files_before = len(live_files(lake))

    metrics = lake.compact(ASSET, DAY)
    assert metrics["numFilesRemoved"] == files_before
    assert len(live_files(lake)) < files_before
    assert_frame_equal(lake.read_day(ASSET, DAY).sort("doc_id"), before)
    assert lake.part_names(ASSET, DAY) == [f"p{i}" for i in range(6)]

    lake.vacuum(ASSET, 0)
    assert data_files(lake) == live_files(lake)
    assert_frame_equal(lake.read_day(ASSET, DAY).sort("doc_id"), before)


# Lake: every write against a model (hypothesis) ----------------------------------------------
MODEL_DAYS = ("2026-03-01", "2026-03-02")
MODEL_PARTS = ("p1", "p2", "p3")
doc_ids = st.lists(st.sampled_from([f"d{i}" for i in range(10)]), max_size=4, unique=True)


class LakeAgainstAModel(RuleBasedStateMachine):
    """Any sequence of part writes, retries, whole-day and multi-day writes, compactions and
    vacuums: the lake holds exactly what a dict day -> part -> doc ids says."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="lake-model-")
        self.lake = Lake(self.folder)
        self.model: dict[str, dict[str, list[str]]] = {day: {} for day in MODEL_DAYS}

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _frame(self, ids: list[str], day: str | None = None) -> pl.DataFrame:
        data = pl.DataFrame({"doc_id": ids}, schema={"doc_id": pl.String})
        if day is not None:
            data = data.with_columns(ingest_date=pl.lit(date.fromisoformat(day)))
        return data

    @rule(day=st.sampled_from(MODEL_DAYS), part=st.sampled_from(MODEL_PARTS), ids=doc_ids)
    def write_part(self, day: str, part: str, ids: list[str]) -> None:
        self.lake.write(ASSET, day, self._frame(ids), part)
        self.model[day][part] = ids

    @precondition(lambda self: any(self.model[d] for d in MODEL_DAYS))
    @rule(data=st.data(), ids=doc_ids)
    def rewrite_part(self, data: st.DataObject, ids: list[str]) -> None:
        """A retry of a part already written (the part `day`: a whole-day rewrite)."""
        written = sorted((d, p) for d in MODEL_DAYS for p in self.model[d])
        day, part = data.draw(st.sampled_from(written))
        self.lake.write(ASSET, day, self._frame(ids), part)
        if part == DAY_PART:
            self.model[day] = {DAY_PART: ids}
        else:
            self.model[day][part] = ids

    @rule(day=st.sampled_from(MODEL_DAYS), ids=doc_ids)
    def write_whole_day(self, day: str, ids: list[str]) -> None:
        self.lake.write(ASSET, day, self._frame(ids))
        self.model[day] = {DAY_PART: ids}

    @rule(
        days=st.lists(st.sampled_from(MODEL_DAYS), min_size=1, max_size=2, unique=True),
        ids=st.fixed_dictionaries({d: doc_ids for d in MODEL_DAYS}),
    )
    def write_days(self, days: list[str], ids: dict[str, list[str]]) -> None:
        rows = pl.concat([self._frame(ids[d], d) for d in days])
        self.lake.write_days(ASSET, days, rows)
        for day in days:
            self.model[day] = {DAY_PART: ids[day]}

    @rule(day=st.sampled_from(MODEL_DAYS))
    def compact(self, day: str) -> None:
        self.lake.compact(ASSET, day)

    @rule()
    def vacuum(self) -> None:
        self.lake.vacuum(ASSET, 0)
        if self.lake.exists(ASSET):
            assert data_files(self.lake) == live_files(self.lake)

    def expected(self, day: str) -> dict[str, list[str]]:
        return {p: sorted(ids) for p, ids in self.model[day].items() if ids}

    @rule()
    def read_and_compare(self) -> None:
        """Every read of the lake's API agrees with the model."""
        if not self.lake.exists(ASSET):
            return
        for day in MODEL_DAYS:
            expected = self.expected(day)
            parts = self.lake.read_parts(ASSET, day)
            assert {p: sorted(f["doc_id"]) for p, f in parts.items()} == expected, day
            whole = self.lake.read_day(ASSET, day)
            got = sorted(whole["doc_id"]) if whole.width else []
            assert got == sorted(i for ids in expected.values() for i in ids), day
            assert self.lake.part_names(ASSET, day) == sorted(expected)
            assert self.lake.day_rows(ASSET, day) == len(got)

    @invariant()
    def table_equals_the_model(self) -> None:
        """After every step, the whole table (one raw Delta read) is the model, row for row."""
        if not self.lake.exists(ASSET):
            assert all(not parts for parts in self.model.values())
            return
        rows = pl.read_delta(self.lake.table_uri(ASSET)).select(
            pl.col("ingest_date").cast(pl.String), "part", "doc_id"
        )
        expected = sorted(
            (day, part, doc_id)
            for day in MODEL_DAYS
            for part, ids in self.model[day].items()
            for doc_id in ids
        )
        assert sorted(rows.iter_rows()) == expected


LakeAgainstAModel.TestCase.settings = settings(
    max_examples=15, stateful_step_count=12, deadline=None
)
test_lake_against_a_model = LakeAgainstAModel.TestCase
