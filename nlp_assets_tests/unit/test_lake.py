"""The Parquet lake (day partitions as sets of parts) and the IO manager every stage uses."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from upath import UPath

import nlp_assets.lake as lake_module
import nlp_assets.resources.lake as lake_resources
from nlp_assets.lake import DAY_PART, DayLocks, Lake, LeaseLost
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.lake import LakeIOManager, LakeResource, markdown_preview, run_part

DAY = "2026-03-01"
ASSET = "cleaned_text"


def frame(*doc_ids: str) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": list(doc_ids), "n": [len(d) for d in doc_ids]})


def files_on_disk(lake: Lake, asset: str = ASSET, day: str = DAY) -> list[str]:
    """Every file under the day's folder, relative to it (data, manifests, debris)."""
    folder = lake.day_dir(asset, day)
    found = folder.fs.find(folder.path) if folder.exists() else []
    return sorted(str(UPath(f).relative_to(UPath(folder.path)).as_posix()) for f in found)


def assert_only_live_files(lake: Lake, asset: str = ASSET, day: str = DAY) -> None:
    """Nothing on disk but the current generation's files and manifests (no temp file)."""
    folder = lake.day_dir(asset, day)
    live = {p.relative_to(folder).as_posix() for p in lake.parts(asset, day)}
    on_disk = files_on_disk(lake, asset, day)
    assert {f for f in on_disk if not f.startswith("_manifest/")} == live
    manifests = [f for f in on_disk if f.startswith("_manifest/")]
    assert manifests and all(re.fullmatch(r"_manifest/\d{12}\.json", f) for f in manifests)


@pytest.fixture(params=["local", "memory"])
def lake(request, tmp_path: Path) -> Lake:
    """The same behaviour on a local folder and on an fsspec file system."""
    if request.param == "local":
        return Lake(tmp_path / "lake")
    return Lake(f"memory://lake-{uuid.uuid4().hex}")


# Lake: the day index a micro-batch reads the rest of its day through -------------------------
ids = st.lists(st.sampled_from([f"d{i}" for i in range(12)]), max_size=6)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("part"), st.sampled_from(["p1", "p2", "p3", "p4"]), ids),
        st.tuples(st.just("day"), st.just(DAY_PART), ids),
        st.tuples(st.just("read"), st.sampled_from(["p1", "p2", "none"]), st.just([])),
    ),
    max_size=25,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=operations)
def test_day_index_reads_exactly_what_the_parts_hold_whatever_was_rewritten(
    lake: Lake, steps: list[tuple[str, str, list[str]]]
) -> None:
    """Retried parts, whole-day rewrites and index rewrites in any order: the index never
    serves an id a live part no longer holds, nor misses one it does."""
    asset = f"index_{uuid.uuid4().hex[:8]}"  # a fresh day for each example
    for kind, part, doc_ids in steps:
        if kind == "read":
            expected = sorted(
                doc_id
                for name, frame_ in lake.read_parts(asset, DAY, columns=["doc_id"]).items()
                if name != part
                for doc_id in frame_["doc_id"]
            )
            got = lake.read_day_columns(asset, DAY, ["doc_id"], exclude_parts=[part], index_after=1)
            assert sorted(got["doc_id"]) == expected
        else:
            rows = pl.DataFrame({"doc_id": doc_ids}, schema={"doc_id": pl.String})
            lake.write(asset, DAY, rows, part)


def test_day_index_is_written_after_enough_parts_and_then_read_instead_of_them(
    lake: Lake,
) -> None:
    for k in range(5):
        lake.write(ASSET, DAY, frame(f"a{k}", f"b{k}"), f"p{k}")
    read = lake.read_day_columns(ASSET, DAY, ["doc_id"], exclude_parts=["p0"], index_after=3)
    assert sorted(read["doc_id"]) == sorted(f"{x}{k}" for k in range(1, 5) for x in "ab")
    index = lake.day_dir(ASSET, DAY) / "_index" / "doc_id.parquet"
    assert sorted(lake_module._read_parquet(index)["part"].unique()) == [f"p{k}" for k in range(5)]
    # the parts it covers are not read again: remove one's file behind the lake's back
    lake.parts(ASSET, DAY)[1].unlink()
    again = lake.read_day_columns(ASSET, DAY, ["doc_id"], index_after=3)
    assert sorted(again["doc_id"]) == sorted(f"{x}{k}" for k in range(5) for x in "ab")


# Lake: writing -------------------------------------------------------------------------------
def test_parts_live_under_asset_and_day(lake: Lake) -> None:
    path = lake.write(ASSET, DAY, frame("a"))
    assert path.name == "day.parquet"
    assert path.relative_to(lake.root / ASSET / DAY).as_posix().startswith("_parts/")
    assert lake.parts(ASSET, DAY) == [path]
    assert lake.part_names(ASSET, DAY) == [DAY_PART]


def test_named_part_is_written_beside_the_others(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a", "b"))
    lake.write(ASSET, DAY, frame("c"), part="batch-0900")
    lake.write(ASSET, DAY, frame("d"), part="batch-1000")

    assert lake.part_names(ASSET, DAY) == ["batch-0900", "batch-1000", "day"]
    assert [p.name for p in lake.parts(ASSET, DAY)] == [
        "batch-0900.parquet",
        "batch-1000.parquet",
        "day.parquet",
    ]
    assert_only_live_files(lake)


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

    assert lake.part_names(ASSET, DAY) == ["day"]
    assert_only_live_files(lake)  # the replaced parts' files are gone
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
    assert_only_live_files(lake)
    lake.write(ASSET, DAY, frame("c"))
    assert_only_live_files(lake)
    assert lake.part_names(ASSET, DAY) == ["day"]


def test_failed_write_leaves_no_temp_file_and_keeps_the_old_part(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a"))
    unwritable = pl.DataFrame({"doc_id": [object()]}, schema={"doc_id": pl.Object})

    with pytest.raises(pl.exceptions.PolarsError):
        lake.write(ASSET, DAY, unwritable)

    assert_only_live_files(lake)
    assert lake.part_names(ASSET, DAY) == ["day"]
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("a"))


def test_unpartitioned_asset_is_one_data_file(lake: Lake) -> None:
    path = lake.write("sentiment_model", None, frame("w"))
    assert path == lake.root / "sentiment_model" / "data.parquet"
    assert_frame_equal(lake.read_part("sentiment_model", None), frame("w"))


def test_quarantine_lives_beside_the_stages(lake: Lake) -> None:
    path = lake.write_quarantine("raw_text", DAY, frame("bad"), part="batch-0900")
    assert lake.parts("quarantine/raw_text", DAY) == [path]
    assert path.name == "batch-0900.parquet"
    assert path.is_relative_to(lake.root / "quarantine" / "raw_text" / DAY)
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
    assert Lake(root).part_names(ASSET, DAY) == ["day"]


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
    (path,) = Lake(root).parts(ASSET, DAY)
    assert metadata["path"] == dg.MetadataValue.path(str(path))


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


# Lake: a day is published whole (old or new, never a mix) ------------------------------------
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


def states_after(writes: list[tuple[str, list[str]]], start: dict | None = None) -> list[tuple]:
    """Each state of the day (its doc_ids, sorted) after each write, in order."""
    current = dict(start or {})
    states = []
    for part, ids in writes:
        current = {DAY_PART: ids} if part == DAY_PART else {**current, part: ids}
        states.append(tuple(sorted(i for rows in current.values() for i in rows)))
    return states


def day_ids(lake: Lake) -> tuple:
    day = lake.read_day(ASSET, DAY, missing_ok=True)
    return tuple(sorted(day["doc_id"])) if day.width else ()


def test_readers_racing_a_writer_see_exactly_one_generation(lake: Lake) -> None:
    generations = 30
    writes = [w for g in range(generations) for w in writes_of_generation(g)]
    valid = {(), *states_after(writes)}
    done = threading.Event()

    def writer() -> None:
        try:
            for part, ids in writes:
                lake.write(ASSET, DAY, frame(*ids), part)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: set[tuple] = set()
    mixed: list[str] = []
    reads = 0
    while not done.is_set() or reads < 20:
        reads += 1
        try:
            ids = day_ids(lake)
        except Exception as error:  # a listed file gone under the reader
            mixed.append(f"{type(error).__name__}: {error}")
            continue
        seen.add(ids)
        if ids not in valid:
            mixed.append(f"{len(ids)} rows, not one generation: {ids[:3]}...")
    thread.join()

    assert mixed == [], f"{len(mixed)} of {reads} reads saw a mix, e.g. {mixed[:3]}"
    assert len(seen) >= 3, "the reader must have raced several writes"
    assert day_ids(lake) == states_after(writes)[-1]


CRASHING_WRITER = r"""
import builtins, io, os, shutil, signal, sys
import polars as pl
from nlp_assets.lake import Lake

root, crash_at, part = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ids = sys.argv[4].split(",")
count = 0

def step():
    global count
    count += 1
    if count == crash_at:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a pod OOM-killed

def counted(function):
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        step()
        return result
    return wrapper

for name in ("rename", "replace", "link", "unlink", "remove", "rmdir", "mkdir"):
    setattr(os, name, counted(getattr(os, name)))
shutil.move = counted(shutil.move)
real_open = io.open
def opened(file, mode="r", *args, **kwargs):
    handle = real_open(file, mode, *args, **kwargs)
    if any(flag in mode for flag in "wxa+"):
        step()  # the file exists, still empty: a crash in the middle of writing it
    return handle
io.open = builtins.open = opened

frame = pl.DataFrame({"doc_id": ids, "n": [len(i) for i in ids]})
Lake(root).write("cleaned_text", "2026-03-01", frame, part)
print("completed", count)
"""


@pytest.mark.parametrize(
    ("part", "new_ids"),
    [
        (DAY_PART, block("new-day")),  # a whole-day rewrite over a day with parts
        ("p0", block("new-p0")),  # a retried micro-batch overwriting its own part
        ("p2", block("new-p2")),  # a new micro-batch part
    ],
)
def test_a_writer_killed_at_any_step_leaves_the_old_or_the_new_day(
    tmp_path: Path, part: str, new_ids: list[str]
) -> None:
    old_writes = [(DAY_PART, block("old-day")), ("p0", block("old-p0")), ("p1", block("old-p1"))]
    old = states_after(old_writes)[-1]
    new = states_after([*old_writes, (part, new_ids)])[-1]
    outcomes = []
    for crash_at in range(1, 60):
        root = tmp_path / f"crash-{crash_at}"
        for old_part, ids in old_writes:
            Lake(root).write(ASSET, DAY, frame(*ids), old_part)
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                CRASHING_WRITER,
                str(root),
                str(crash_at),
                part,
                ",".join(new_ids),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lake = Lake(root)
        after = day_ids(lake)
        outcomes.append(("old" if after == old else "new" if after == new else "MIX", crash_at))
        assert after in (old, new), f"killed after file-system step {crash_at}: {after}"
        # the lake stays writable, and the crash's debris never shows up in a read
        lake.write(ASSET, DAY, frame("next"), "p9")
        assert day_ids(lake) == tuple(sorted([*after, "next"]))
        if run.returncode == 0:
            assert "completed" in run.stdout
            assert after == new
            break
        assert run.returncode == -signal.SIGKILL, run.stderr
    else:
        pytest.fail("the writer never completed")
    assert ("old", 1) in outcomes and outcomes[-1][0] == "new"


def test_a_reader_starts_again_when_a_file_is_collected_under_it(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.write(ASSET, DAY, frame("old-a"), part="p0")
    lake.write(ASSET, DAY, frame("old-b"), part="p1")
    real_read = lake_module._read_parquet
    rewrites = []

    def read_while_the_day_is_rewritten(path, columns=None):
        if not rewrites:  # between the manifest and the first file: a whole-day rewrite
            rewrites.append(lake.write(ASSET, DAY, frame("new")))
        return real_read(path, columns)

    monkeypatch.setattr(lake_module, "_read_parquet", read_while_the_day_is_rewritten)
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("new"))
    assert rewrites


def test_a_day_written_before_manifests_still_reads_and_is_taken_over(lake: Lake) -> None:
    folder = lake.day_dir(ASSET, DAY)
    folder.mkdir(parents=True, exist_ok=True)
    for part, ids in (("day", ["a"]), ("batch-0900", ["b"])):  # the old layout
        with (folder / f"{part}.parquet").open("wb") as handle:
            frame(*ids).write_parquet(handle)

    assert sorted(lake.read_day(ASSET, DAY)["doc_id"]) == ["a", "b"]
    assert lake.part_names(ASSET, DAY) == ["batch-0900", "day"]
    assert_frame_equal(lake.read_part(ASSET, DAY, "batch-0900"), frame("b"))

    lake.write(ASSET, DAY, frame("c"), part="batch-1000")  # a micro-batch keeps the old parts
    assert sorted(lake.read_day(ASSET, DAY)["doc_id"]) == ["a", "b", "c"]
    lake.write(ASSET, DAY, frame("b2"), part="batch-0900")  # a retry replaces its old file
    assert sorted(lake.read_day(ASSET, DAY)["doc_id"]) == ["a", "b2", "c"]
    assert "batch-0900.parquet" not in files_on_disk(lake)
    lake.write(ASSET, DAY, frame("d"))  # a whole-day rewrite replaces everything
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("d"))
    assert_only_live_files(lake)


def test_debris_of_a_killed_writer_is_collected_only_after_the_grace_period(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.write(ASSET, DAY, frame("a"))
    folder = lake.day_dir(ASSET, DAY)
    stale = folder / "_parts" / f"{int((time.time() - 7200) * 1000):013d}-dead" / "day.parquet"
    fresh = folder / "_parts" / f"{int(time.time() * 1000):013d}-busy" / "p1.parquet"
    for path in (stale, fresh):  # never published: a killed writer, a writer about to publish
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            frame("debris").write_parquet(handle)
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("a"))  # never read

    lake.write(ASSET, DAY, frame("b"), part="p2")

    assert not stale.exists()  # older than the grace period (an hour)
    assert fresh.exists()  # its writer may still publish it
    assert sorted(lake.read_day(ASSET, DAY)["doc_id"]) == ["a", "b"]


def test_manifests_are_collected_once_older_than_the_grace_period(lake: Lake) -> None:
    for i in range(4):
        lake.write(ASSET, DAY, frame(f"m{i}"), part=f"p{i}")
    manifests = lake.day_dir(ASSET, DAY) / "_manifest"
    assert len(names_in(manifests)) == 4  # young: kept, so no generation's name is reused
    for name in names_in(manifests):  # all four published two hours ago
        body = json.loads((manifests / name).read_bytes())
        (manifests / name).write_bytes(
            json.dumps(body | {"published_at": time.time() - 7200}).encode()
        )

    lake.write(ASSET, DAY, frame("m4"), part="p4")

    # generation 4 was the newest before this write: kept however old, for readers of it
    assert names_in(manifests) == [f"{g:012d}.json" for g in (4, 5)]
    assert len(lake.read_day(ASSET, DAY)) == 5


def names_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_concurrent_writers_of_different_parts_lose_nothing(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")  # local disk: an exclusive create is atomic across threads

    def writer(w: int) -> None:
        for i in range(8):
            lake.write(ASSET, DAY, frame(f"w{w}-{i}"), part=f"w{w}-{i}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lake.part_names(ASSET, DAY)) == 32
    assert lake.read_day(ASSET, DAY)["doc_id"].n_unique() == 32
    assert_only_live_files(lake)


def test_a_day_can_be_read_without_some_parts_and_columns(lake: Lake) -> None:
    lake.write(ASSET, DAY, frame("a", "b"))
    lake.write(ASSET, DAY, frame("c"), part="batch-0900")
    others = lake.read_day(ASSET, DAY, columns=["doc_id"], exclude_parts=["batch-0900"])
    assert others.columns == ["doc_id"] and others["doc_id"].to_list() == ["a", "b"]
    only_mine = lake.read_day(ASSET, DAY, exclude_parts=["day", "batch-0900"])
    assert only_mine.is_empty()
    assert {k: v["doc_id"].to_list() for k, v in lake.read_parts(ASSET, DAY).items()} == {
        "batch-0900": ["c"],
        "day": ["a", "b"],
    }
    assert lake.read_parts(ASSET, "2026-03-09") == {}


# DayLocks: a day's lease ----------------------------------------------------------------------
def test_a_second_owner_waits_until_the_first_releases_and_says_why(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    first = DayLocks(root, "run-a")
    first.acquire(["2026-03-01", "2026-03-02", "2026-03-03"])
    messages: list[str] = []
    second = DayLocks(root, "run-b", log=messages.append, poll_seconds=0.05)
    taken = threading.Event()
    thread = threading.Thread(target=lambda: (second.acquire([DAY]), taken.set()))
    thread.start()
    time.sleep(1)
    assert not taken.is_set()  # run-a's heartbeat is alive: run-b waits
    first.release()
    first.close()
    thread.join(timeout=10)
    assert taken.is_set()
    assert second.current(DAY).owner == "run-b"
    assert messages[0].startswith(f"waiting for the lake lock of day {DAY}: run run-a holds it")
    assert "took the lake lock" in messages[-1] and "released" in messages[-1]
    second.close()


HOLDER = r"""
import sys, time
from nlp_assets.lake import DayLocks
locks = DayLocks(sys.argv[1], "dead-run", ttl_seconds=1.5)
locks.acquire(["2026-03-01"])
print("held", flush=True)
time.sleep(600)
"""


def test_a_dead_holder_unknown_to_the_instance_expires_after_its_ttl(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    messages: list[str] = []
    waiter = DayLocks(root, "run-b", log=messages.append, poll_seconds=0.1, wait_seconds=2)
    with pytest.raises(TimeoutError, match="held by run dead-run"):
        waiter.acquire([DAY])  # alive: its heartbeat runs, so it holds the day
    holder.kill()  # SIGKILL: no release, no cleanup
    holder.wait()
    started = time.monotonic()
    waiter.acquire([DAY], wait_seconds=30)
    assert time.monotonic() - started < 10  # within a few ttl
    assert waiter.current(DAY).owner == "run-b"
    assert "no heartbeat" in messages[-1]
    waiter.close()


def test_the_run_status_decides_when_the_instance_knows_the_holder(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    holder = DayLocks(root, "run-a")
    holder.acquire([DAY])
    holder.close()  # no process of run-a beats any more
    status = {"run-a": False}  # in progress, e.g. waiting for a pool slot between two steps
    waiter = DayLocks(root, "run-b", is_finished=status.get, poll_seconds=0.05, wait_seconds=1)
    with pytest.raises(TimeoutError, match="its run is in progress"):
        waiter.acquire([DAY])
    status["run-a"] = True  # finished (or marked failed by run monitoring)
    waiter.acquire([DAY], wait_seconds=5)
    assert waiter.current(DAY).owner == "run-b"
    waiter.close()


def test_a_holder_that_lost_its_day_refuses_to_write(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    slow = DayLocks(root, "run-a")
    slow.acquire([DAY])
    lake = Lake(root, lease=slow)
    lake.write(ASSET, DAY, frame("a"))
    DayLocks(root, "run-b", is_finished={"run-a": True}.get).acquire([DAY])  # judged finished

    with pytest.raises(LeaseLost, match=f"run run-a lost the lake lock of day {DAY} to run-b"):
        lake.write(ASSET, DAY, frame("late"))
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("a"))
    slow.close()


def test_overlapping_ranges_taken_in_opposite_orders_do_not_deadlock(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    done = []

    def run(owner: str, order: list[str]) -> None:
        locks = DayLocks(root, owner, poll_seconds=0.02)
        for _ in range(5):
            with locks.holding(order):
                time.sleep(0.01)
        done.append(owner)

    threads = [
        threading.Thread(target=run, args=("run-a", days)),
        threading.Thread(target=run, args=("run-b", days[::-1])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(done) == ["run-a", "run-b"]


@pytest.mark.parametrize(
    ("tags", "days"),
    [
        ({"dagster/partition": "2026-03-01"}, ["2026-03-01"]),
        (  # a single-run backfill (backfill_pipeline_spark): no dagster/partition tag
            {
                "dagster/asset_partition_range_start": "2026-02-27",
                "dagster/asset_partition_range_end": "2026-03-02",
            },
            ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"],
        ),
        ({"dagster/partition": "topic-a"}, []),  # not a day: nothing to lock
        ({}, []),
    ],
)
def test_a_run_locks_the_days_its_tags_name(tags: dict[str, str], days: list[str]) -> None:
    assert lake_resources.run_days(tags) == days
