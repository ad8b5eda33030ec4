"""The lake read by other engines (docs/lake.md "Reading it"): two days of predictions written
the way the pipeline writes them (micro-batch parts, a retried part, a whole-day write over a
micro-batch, one day compacted), then every reader the page shows must give the same doc ids per
day as `nlp_assets.read.read_predictions`, which must give exactly the rows the last write of
each part or day holds. A reader that globbed the files would see the retried part's first
attempt, the replaced micro-batch and the files compaction rewrote. Then what the stock
dagster-deltalake IO manager does with a partition range (it reads only the first day, and its
write of the range is refused), and the Delta types other engines see.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from nlp_assets.lake import Lake
from nlp_assets.read import read_predictions
from nlp_assets_tests.spark_cluster import spark_resource
from nlp_assets_tests.test_warehouse_postgres import predictions_frame

pytestmark = pytest.mark.lake

DAY1, DAY2 = "2026-11-16", "2026-11-17"
DAYS = [DAY1, DAY2]

PerDay = dict[str, list[str]]


def _ids(frame: pl.DataFrame) -> list[str]:
    return sorted(frame["doc_id"].to_list())


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, PerDay]:
    """The lake, and the doc ids each day must hold.

    Day 1: three micro-batch parts, the second written twice (a retried run: its first attempt,
    7 rows of prefix `x`, replaced by 5 rows of prefix `b`), then the day compacted. Day 2: a
    micro-batch, then a whole-day write replacing it, then another micro-batch."""
    store = Lake(tmp_path_factory.mktemp("readers") / "lake")
    a = predictions_frame(6, prefix="a", day=DAY1)
    x = predictions_frame(7, prefix="x", day=DAY1)
    b = predictions_frame(5, prefix="b", day=DAY1)
    c = predictions_frame(4, prefix="c", day=DAY1)
    store.write("predictions", DAY1, a, part="topic-0-0-5")
    store.write("predictions", DAY1, x, part="topic-0-6-12")
    store.write("predictions", DAY1, b, part="topic-0-6-12")  # the retry
    store.write("predictions", DAY1, c, part="topic-0-13-16")
    m = predictions_frame(3, prefix="m", day=DAY2)
    w = predictions_frame(8, prefix="w", day=DAY2)
    k = predictions_frame(2, prefix="k", day=DAY2)
    store.write("predictions", DAY2, m, part="topic-0-0-2")
    store.write("predictions", DAY2, w)  # the whole day: replaces m
    store.write("predictions", DAY2, k, part="topic-0-3-4")

    files_before = len(store.files("predictions", [DAY1]))
    store.compact("predictions", DAY1)
    assert files_before == 3 and len(store.files("predictions", [DAY1])) == 1
    expected = {DAY1: _ids(pl.concat([a, b, c])), DAY2: _ids(pl.concat([w, k]))}
    return store, expected


def _per_day(frame: pl.DataFrame) -> PerDay:
    """Doc ids by day (as ISO strings, whatever type the engine gave `ingest_date`)."""
    days = frame.select(pl.col("ingest_date").cast(pl.Date).cast(pl.String).alias("day"), "doc_id")
    return {
        day: sorted(group["doc_id"].to_list())
        for (day,), group in days.group_by("day", maintain_order=True)
    }


def _rows(pairs: Iterable[tuple[object, str]]) -> pl.DataFrame:
    """A frame of (ingest_date, doc_id) pairs from an engine's own rows."""
    days, ids = zip(*pairs, strict=True)
    return pl.DataFrame(
        {"ingest_date": [str(d)[:10] for d in days], "doc_id": list(ids)}
    ).with_columns(pl.col("ingest_date").str.to_date())


def _uri(store: Lake) -> str:
    return store.table_uri("predictions")


def test_read_predictions_gives_the_last_write_of_every_part_and_day(lake) -> None:
    store, expected = lake
    frame = read_predictions(DAY1, DAY2, lake=store)
    assert _per_day(frame) == expected
    assert {d: len(ids) for d, ids in expected.items()} == {DAY1: 15, DAY2: 10}
    assert frame["doc_id"].is_unique().all()
    # what a glob of the table's Parquet files would count: the retry, the replaced
    # micro-batch and the compacted files are still on disk until vacuum
    files = list(Path(_uri(store)).rglob("*.parquet"))
    on_disk = pl.read_parquet(files, hive_partitioning=False)
    # day 1: parts a, x (the retry's first attempt), b, c, and the compacted a+b+c;
    # day 2: m (replaced by the whole-day write), w, k
    assert on_disk.height == (6 + 7 + 5 + 4 + 15) + (3 + 8 + 2) == 2 * frame.height
    assert "ingest_date" not in on_disk.columns  # a partition column: not in the files


def test_polars_read_delta_and_scan_delta_match(lake) -> None:
    store, expected = lake
    window = pl.col("ingest_date").is_between(date(2026, 11, 16), date(2026, 11, 17))
    assert _per_day(pl.read_delta(_uri(store)).filter(window)) == expected
    assert _per_day(pl.scan_delta(_uri(store)).filter(window).collect()) == expected
    one = pl.scan_delta(_uri(store)).filter(pl.col("ingest_date") == date(2026, 11, 17))
    assert _per_day(one.collect()) == {DAY2: expected[DAY2]}


def test_pandas_with_a_day_filter_matches(lake) -> None:
    store, expected = lake
    got = {}
    for day in DAYS:
        # the filter's value is a date: a string ("2026-11-16") is refused by pyarrow
        # ("no kernel matching input types (date32[day], string)")
        when = date.fromisoformat(day)
        frame = DeltaTable(_uri(store)).to_pandas(filters=[("ingest_date", "=", when)])
        got.update(_per_day(_rows(zip(frame["ingest_date"], frame["doc_id"], strict=True))))
    assert got == expected


def test_pyarrow_dataset_matches(lake) -> None:
    store, expected = lake
    dataset = DeltaTable(_uri(store)).to_pyarrow_dataset()
    assert _per_day(pl.from_arrow(dataset.to_table(columns=["ingest_date", "doc_id"]))) == expected
    day2 = dataset.to_table(filter=ds.field("ingest_date") == ds.scalar(date(2026, 11, 17)))
    assert sorted(day2["doc_id"].to_pylist()) == expected[DAY2]


def test_duckdb_over_the_pyarrow_dataset_matches(lake) -> None:
    store, expected = lake
    con = duckdb.connect()
    con.register("predictions", DeltaTable(_uri(store)).to_pyarrow_dataset())
    pairs = con.execute("SELECT ingest_date, doc_id FROM predictions").fetchall()
    assert _per_day(_rows(pairs)) == expected
    counts = con.execute(
        "SELECT CAST(ingest_date AS VARCHAR), count(*), count(DISTINCT doc_id) "
        "FROM predictions GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert counts == [(DAY1, 15, 15), (DAY2, 10, 10)]


@pytest.mark.spark
def test_spark_read_lake_matches(lake) -> None:
    """`read_lake`, and the same in plain deltalake + PySpark, without the Delta Spark package:
    the files the log lists (`Lake.files`), `ingest_date` from each file's folder. A local[1]
    session, stopped after unless another test of this worker left one running
    (`SparkResource` then reuses it and leaves it)."""
    from pyspark.sql import functions as F

    from nlp_assets.engines.spark import read_lake

    store, expected = lake
    resource = spark_resource("local[1]", "test-lake-readers")
    try:
        spark = resource.spark_session
        frame = read_lake(spark, str(store.root), "predictions", DAYS)
        types = dict(frame.dtypes)
        rows = frame.select("ingest_date", "doc_id").collect()
        # docs/lake.md's version without nlp_assets: the log's file list, the day from the path
        paths = DeltaTable(_uri(store)).file_uris(
            file_pruning_predicate=[("ingest_date", "in", DAYS)]
        )
        day = F.regexp_extract(F.input_file_name(), "ingest_date=([0-9-]+)", 1)
        plain = spark.read.parquet(*paths).withColumn("ingest_date", F.to_date(day))
        plain_rows = plain.select("ingest_date", "doc_id").collect()
    finally:
        resource.stop()
    assert types["ingest_date"] == "date"  # restored from the folder: not in the files
    assert _per_day(_rows((r["ingest_date"], r["doc_id"]) for r in rows)) == expected
    assert _per_day(_rows((r["ingest_date"], r["doc_id"]) for r in plain_rows)) == expected
    assert sorted(paths) == store.files("predictions", DAYS)


# --- a second Dagster code location, through dagster-deltalake-polars --------------------------

RANGE_TAGS = {  # what a single-run backfill of 16th..17th tags its run with
    "dagster/asset_partition_range_start": DAY1,
    "dagster/asset_partition_range_end": DAY2,
}


def _location(store: Lake, tables: Path) -> dg.Definitions:
    from nlp_assets_tests.fixtures.downstream_location import definitions as location

    return location.definitions(store.root.path, tables)


def _downstream(store: Lake, tables: Path, **kwargs) -> pl.DataFrame:
    """`loaded_predictions` of the downstream location materialised in process over `store`."""
    from nlp_assets_tests.fixtures.downstream_location import definitions as location

    result = dg.materialize(
        [location.predictions, location.loaded_predictions],
        resources=_location(store, tables).resources,
        **kwargs,
    )
    assert result.success
    return result.output_for_node("loaded_predictions")


def _per_day_table(store: Lake, tables: Path, **kwargs) -> dg.ExecuteInProcessResult:
    """`predictions_per_day` of the downstream location, written to its own table."""
    from nlp_assets_tests.fixtures.downstream_location import definitions as location

    return dg.materialize(
        [location.predictions_per_day], resources=_location(store, tables).resources, **kwargs
    )


def test_downstream_location_loads_one_day_partition(lake, tmp_path: Path) -> None:
    store, expected = lake
    for day in DAYS:
        assert _per_day(_downstream(store, tmp_path, partition_key=day)) == {day: expected[day]}


def test_downstream_location_range_run_loads_only_the_first_day(lake, tmp_path: Path) -> None:
    """A run over the range 16th..17th (the tags a single-run backfill gives its run) gets only
    the 16th, without an error: dagster-deltalake 0.29.27 filters a time window on
    `ingest_date = <start>` (`dagster_deltalake.handler._time_window_partition_dnf`).
    docs/lake.md says so; when this fails, a release fixed it: rewrite that paragraph and
    assert both days here."""
    store, expected = lake
    loaded = _downstream(store, tmp_path, tags=RANGE_TAGS)
    assert _per_day(loaded) == {DAY1: expected[DAY1]}
    assert read_predictions(DAY1, DAY2, lake=store).height == 25  # the range holds both days


def test_downstream_location_range_write_is_refused_by_a_first_day_predicate(
    lake, tmp_path: Path
) -> None:
    """The write side of the same finding: the IO manager overwrites a partitioned table that
    exists with the predicate `ingest_date = '<start>'` (`_build_partition_predicate`), so a
    range run whose output holds both days fails (delta-rs refuses the rows outside the
    predicate) and the table keeps what the one-day runs wrote. One-day runs write their day,
    and their materialisations carry no row count (the IO manager's stats fail on deltalake
    1.x). docs/lake.md says so; when this fails, rewrite that paragraph."""
    store, expected = lake
    table = tmp_path / "downstream" / "predictions_per_day"
    for day in DAYS:
        one_day = _per_day_table(store, tmp_path, partition_key=day)
        assert one_day.success
        [written_day] = one_day.asset_materializations_for_node("predictions_per_day")
        assert "table_uri" in written_day.metadata and "num_rows" not in written_day.metadata
    per_day = {d: (len(ids), len(ids)) for d, ids in expected.items()}  # rows, distinct docs

    def written() -> dict[str, tuple[int, int]]:
        frame = pl.read_delta(str(table)).sort("ingest_date")
        days = frame["ingest_date"].cast(pl.String).to_list()
        return dict(zip(days, zip(frame["rows"], frame["docs"], strict=True), strict=True))

    assert written() == per_day == {DAY1: (15, 15), DAY2: (10, 10)}
    version = DeltaTable(str(table)).version()

    # dg.materialize re-raises the IO manager's own error: delta-rs refusing the 17th's row
    with pytest.raises(DeltaError, match="1 rows failed validation check") as refused:
        _per_day_table(store, tmp_path, tags=RANGE_TAGS)
    assert DAY2 in str(refused.value) and DAY1 not in str(refused.value)
    assert DeltaTable(str(table)).version() == version
    assert written() == per_day


# --- types: what other engines see -------------------------------------------------------------


def test_other_engines_see_delta_types_and_lake_restores_the_polars_ones(tmp_path: Path) -> None:
    """Delta has no unsigned integers or fixed-size arrays: polars' own reader gets `Int64`
    and `List`, `Lake` (and so `nlp_assets.read`) gives back what the stage wrote."""
    store = Lake(tmp_path / "lake")
    frame = pl.DataFrame(
        {
            "doc_id": ["a", "b"],
            "token_count": pl.Series([3, 5], dtype=pl.UInt32),
            "token_ids": pl.Series([[1, 2, 3], [4, 5, 6, 7, 8]], dtype=pl.List(pl.UInt32)),
            "embedding": pl.Series([[0.5, 1.0], [0.25, 2.0]], dtype=pl.Array(pl.Float32, 2)),
        }
    )
    store.write("features", DAY1, frame)
    outside = pl.read_delta(store.table_uri("features"))
    assert outside.schema["token_count"] == pl.Int64
    assert outside.schema["token_ids"] == pl.List(pl.Int64)
    assert outside.schema["embedding"] == pl.List(pl.Float32)
    assert outside.schema["ingest_date"] == pl.Date
    assert outside.select(frame.columns).cast(frame.schema).sort("doc_id").equals(frame)
    restored = store.read_day("features", DAY1).select(frame.columns).sort("doc_id")
    assert restored.schema == frame.schema
    assert restored.equals(frame)
