"""The Parquet lake (day partitions as sets of parts) and the IO manager every stage uses."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import resources.lake as lake_resources
from nlp_assets.lake import DAY_PART, Lake
from nlp_assets.partitions import daily_partitions
from resources.lake import LakeIOManager, LakeResource, markdown_preview, run_part

DAY = "2026-03-01"
ASSET = "cleaned_text"


def frame(*doc_ids: str) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": list(doc_ids), "n": [len(d) for d in doc_ids]})


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(params=["local", "memory"])
def lake(request, tmp_path: Path) -> Lake:
    """The same behaviour on a local folder and on an fsspec file system."""
    if request.param == "local":
        return Lake(tmp_path / "lake")
    return Lake(f"memory://lake-{uuid.uuid4().hex}")


# Lake: writing -------------------------------------------------------------------------------
def test_parts_live_under_asset_and_day(lake: Lake) -> None:
    path = lake.write(ASSET, DAY, frame("a"))
    assert path == lake.root / ASSET / DAY / "day.parquet"
    assert lake.parts(ASSET, DAY) == [path]


def test_named_part_is_written_beside_the_others(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a", "b"))
    lake.write(ASSET, DAY, frame("c"), part="batch-0900")
    lake.write(ASSET, DAY, frame("d"), part="batch-1000")

    assert names(lake.day_dir(ASSET, DAY)) == [
        "batch-0900.parquet",
        "batch-1000.parquet",
        "day.parquet",
    ]


def test_rewriting_a_named_part_replaces_only_that_part(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a", "b"))
    lake.write(ASSET, DAY, frame("c"), part="batch-0900")
    lake.write(ASSET, DAY, frame("d"), part="batch-1000")

    lake.write(ASSET, DAY, frame("c2", "c3"), part="batch-0900")  # the retried micro-batch

    assert len(lake.parts(ASSET, DAY)) == 3
    assert_frame_equal(lake.read_part(ASSET, DAY, "batch-0900"), frame("c2", "c3"))
    assert_frame_equal(lake.read_part(ASSET, DAY, "batch-1000"), frame("d"))
    assert_frame_equal(lake.read_part(ASSET, DAY), frame("a", "b"))


def test_whole_day_part_replaces_every_other_part_of_that_day(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"), part="batch-0900")
    lake.write(ASSET, DAY, frame("b"), part="batch-1000")
    lake.write(ASSET, "2026-03-02", frame("other day"), part="batch-0900")

    lake.write(ASSET, DAY, frame("a", "b", "late"))

    assert names(lake.day_dir(ASSET, DAY)) == ["day.parquet"]
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("a", "b", "late"))
    # other days and other assets are not touched
    assert_frame_equal(lake.read_day(ASSET, "2026-03-02"), frame("other day"))


def test_rewriting_the_whole_day_replaces_it(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"))
    lake.write(ASSET, DAY, frame("b"))
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("b"))


@pytest.mark.parametrize("part", ["", "../day", "a/b", "batch 1", "x*", "é"])
def test_invalid_part_name_is_refused(lake: Lake, part: str) -> None:
    with pytest.raises(ValueError, match="invalid part name"):
        lake.write(ASSET, DAY, frame("a"), part=part)
    assert lake.parts(ASSET, DAY) == []


def test_valid_part_names(lake: Lake) -> None:
    for part in ("batch-0900", "offsets_12.40", "window=0900-1000"):
        lake.write(ASSET, DAY, frame(part), part=part)
    assert len(lake.parts(ASSET, DAY)) == 3


def test_writes_leave_no_temp_file(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"), part="batch-0900")
    lake.write(ASSET, DAY, frame("b"), part="batch-0900")
    lake.write(ASSET, DAY, frame("c"))
    assert names(lake.day_dir(ASSET, DAY)) == ["day.parquet"]


def test_failed_write_leaves_no_temp_file_and_keeps_the_old_part(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"))
    unwritable = pl.DataFrame({"doc_id": [object()]}, schema={"doc_id": pl.Object})

    with pytest.raises(pl.exceptions.PolarsError):
        lake.write(ASSET, DAY, unwritable)

    assert names(lake.day_dir(ASSET, DAY)) == ["day.parquet"]
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("a"))


def test_unpartitioned_asset_is_one_data_file(lake: Lake) -> None:
    path = lake.write("sentiment_model", None, frame("w"))
    assert path == lake.root / "sentiment_model" / "data.parquet"
    assert_frame_equal(lake.read_part("sentiment_model", None), frame("w"))


def test_quarantine_lives_beside_the_stages(lake: Lake) -> None:
    path = lake.write_quarantine("raw_text", DAY, frame("bad"), part="batch-0900")
    assert path == lake.root / "quarantine" / "raw_text" / DAY / "batch-0900.parquet"
    assert_frame_equal(lake.read_quarantine("raw_text", date.fromisoformat(DAY)), frame("bad"))
    assert lake.read_quarantine("raw_text", "2026-03-02").is_empty()


# Lake: reading -------------------------------------------------------------------------------
def test_read_day_concatenates_all_parts(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"), part="batch-0900")
    lake.write(ASSET, DAY, frame("b", "c"), part="batch-1000")
    day = lake.read_day(ASSET, DAY)
    assert day.height == 3
    assert sorted(day["doc_id"]) == ["a", "b", "c"]


def test_read_day_relaxes_types_across_parts(lake: Lake) -> None:
    lake.write(ASSET, DAY, pl.DataFrame({"n": [1]}, schema={"n": pl.Int32}), part="p1")
    lake.write(ASSET, DAY, pl.DataFrame({"n": [2]}, schema={"n": pl.Int64}), part="p2")
    day = lake.read_day(ASSET, DAY)
    assert day.schema == {"n": pl.Int64}
    assert day["n"].to_list() == [1, 2]


def test_read_part_reads_only_that_part(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"), part="batch-0900")
    lake.write(ASSET, DAY, frame("b"), part="batch-1000")
    assert_frame_equal(lake.read_part(ASSET, DAY, "batch-1000"), frame("b"))


def test_read_days_skips_absent_days(lake: Lake) -> None:
    lake.write(ASSET, "2026-03-01", frame("a"))
    lake.write(ASSET, "2026-03-03", frame("c"), part="batch-0900")
    lake.write(ASSET, "2026-03-03", frame("d"), part="batch-1000")
    lake.write(ASSET, "2026-03-09", frame("outside"))

    days = [date(2026, 3, d) for d in range(1, 5)]  # dates or ISO strings both work
    assert sorted(lake.read_days(ASSET, days)["doc_id"]) == ["a", "c", "d"]
    assert lake.read_days(ASSET, ["2026-04-01", "2026-04-02"]).is_empty()


def test_missing_partition_says_what_to_materialise(lake: Lake) -> None:
    with pytest.raises(FileNotFoundError) as day_error:
        lake.read_day(ASSET, DAY)
    with pytest.raises(FileNotFoundError) as part_error:
        lake.read_part(ASSET, DAY, "batch-0900")
    for error in (day_error, part_error):
        message = str(error.value)
        assert ASSET in message
        assert DAY in message
        assert "materialise" in message


def test_missing_unpartitioned_asset_says_what_to_materialise(lake: Lake) -> None:
    with pytest.raises(FileNotFoundError, match=r"sentiment_model .*materialise"):
        lake.read_part("sentiment_model", None)


def test_missing_day_can_be_read_as_empty(lake: Lake) -> None:
    assert lake.read_day(ASSET, DAY, missing_ok=True).is_empty()


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
    assert names(root / ASSET / DAY) == ["day.parquet"]


def test_handle_output_records_row_count_schema_preview_and_path(
    io_manager: LakeIOManager, root: Path
) -> None:
    context = output_context()
    io_manager.handle_output(context, frame("a", "b", "c"))

    metadata = context.get_logged_metadata()
    assert metadata["dagster/row_count"] == dg.MetadataValue.int(3)
    assert metadata["dagster/column_schema"] == dg.MetadataValue.table_schema(
        dg.TableSchema(columns=[dg.TableColumn("doc_id", "String"), dg.TableColumn("n", "Int64")])
    )
    preview = metadata["preview"]
    assert isinstance(preview, dg.MarkdownMetadataValue)
    assert preview.value == markdown_preview(frame("a", "b", "c"))
    assert preview.value.splitlines()[0] == "| doc_id | n |"
    assert metadata["path"] == dg.MetadataValue.path(str(root / ASSET / DAY / "day.parquet"))


def test_load_input_returns_what_was_stored(io_manager: LakeIOManager) -> None:
    io_manager.handle_output(output_context(), frame("a", "b"))
    assert_frame_equal(io_manager.load_input(input_context()), frame("a", "b"))


def test_unpartitioned_asset_round_trips_through_data_file(
    io_manager: LakeIOManager, root: Path
) -> None:
    io_manager.handle_output(output_context("sentiment_model", None), frame("w"))
    assert (root / "sentiment_model" / "data.parquet").is_file()
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
    assert names(root / ASSET / DAY) == ["batch-1000.parquet", "day.parquet"]


def test_range_of_partitions_loads_as_one_frame(io_manager: LakeIOManager, root: Path) -> None:
    lake = Lake(root)
    lake.write(ASSET, "2026-03-01", frame("a"))
    lake.write(ASSET, "2026-03-02", frame("b"), part="batch-0900")
    lake.write(ASSET, "2026-03-02", frame("c"), part="batch-1000")
    lake.write(ASSET, "2026-03-03", frame("d"))
    lake.write(ASSET, "2026-03-04", frame("outside"))

    key_range = dg.PartitionKeyRange("2026-03-01", "2026-03-03")
    loaded = io_manager.load_input(input_context(partition_key=None, key_range=key_range))
    assert loaded["doc_id"].to_list() == ["a", "b", "c", "d"]


def test_range_with_a_missing_day_names_that_day(io_manager: LakeIOManager, root: Path) -> None:
    Lake(root).write(ASSET, "2026-03-01", frame("a"))
    key_range = dg.PartitionKeyRange("2026-03-01", "2026-03-02")
    with pytest.raises(FileNotFoundError, match=rf"{ASSET} .*2026-03-02.*materialise"):
        io_manager.load_input(input_context(partition_key=None, key_range=key_range))


def test_missing_partition_fails_the_load_with_a_hint(io_manager: LakeIOManager) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{ASSET} has no data for {DAY}.*materialise"):
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
