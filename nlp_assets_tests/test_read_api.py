"""Reading outputs outside Dagster (`nlp_assets.read`) and inside it (a downstream asset)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from nlp_assets.definitions import defs
from nlp_assets.downstream.sentiment_by_source import (
    SENTIMENT_BY_SOURCE_SCHEMA,
    sentiment_by_source,
    sentiment_by_source_asset,
)
from nlp_assets.kernels.aggregate import AGGREGATES_SCHEMA
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.lake import Lake
from nlp_assets.partitions import daily_partitions
from nlp_assets.read import days_between, read_aggregates, read_asset, read_predictions
from nlp_assets.resources.lake import LakeIOManager, LakeResource
from nlp_assets_tests.test_warehouse_postgres import predictions_frame


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    """16th: one part; 17th: two parts (a backfill part and a micro-batch); 18th: nothing;
    19th: one part."""
    store = Lake(tmp_path / "lake")
    store.write("predictions", "2026-11-16", predictions_frame(4, prefix="a", day="2026-11-16"))
    store.write("predictions", "2026-11-17", predictions_frame(5, prefix="b", day="2026-11-17"))
    store.write(
        "predictions",
        "2026-11-17",
        predictions_frame(2, prefix="k", day="2026-11-17"),
        part="topic-0-7-8",
    )
    store.write("predictions", "2026-11-19", predictions_frame(3, prefix="c", day="2026-11-19"))
    return store


def test_a_range_reads_every_part_of_every_day_once(lake: Lake) -> None:
    week = read_predictions("2026-11-16", "2026-11-19", lake=lake.root)
    assert week.height == 4 + 5 + 2 + 3
    assert week["doc_id"].n_unique() == week.height
    per_day = dict(week.group_by("ingest_date").len().iter_rows())
    assert per_day == {date(2026, 11, 16): 4, date(2026, 11, 17): 7, date(2026, 11, 19): 3}
    assert dict(week.schema) == PREDICTIONS_SCHEMA


def test_one_day_dates_and_lake_objects_are_accepted(lake: Lake) -> None:
    day = read_predictions(date(2026, 11, 17), lake=lake)
    assert day.height == 7 and set(day["ingest_date"]) == {date(2026, 11, 17)}


def test_the_lake_defaults_to_the_pipeline_settings(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NLP_LAKE_DIR", str(lake.root))
    assert read_predictions("2026-11-19").height == 3


def test_no_data_is_an_empty_frame_with_the_stage_columns(lake: Lake) -> None:
    empty = read_aggregates("2026-11-16", "2026-11-19", lake=lake)
    assert empty.height == 0 and dict(empty.schema) == AGGREGATES_SCHEMA
    gap = read_predictions("2026-11-18", lake=lake)
    assert gap.height == 0 and dict(gap.schema) == PREDICTIONS_SCHEMA


def test_strict_names_the_missing_days(lake: Lake) -> None:
    with pytest.raises(FileNotFoundError, match=r"predictions has no data for 2026-11-18 under "):
        read_predictions("2026-11-16", "2026-11-19", lake=lake, strict=True)
    assert read_predictions("2026-11-16", "2026-11-17", lake=lake, strict=True).height == 11


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("18/11/2026", None, "start must be a date or 'YYYY-MM-DD'"),
        ("2026-11-18", "tomorrow", "end must be a date or 'YYYY-MM-DD'"),
        ("2026-11-18", "2026-11-17", "end 2026-11-17 is before start 2026-11-18"),
        ("2000-01-01", "2026-01-01", "read at most"),
    ],
)
def test_bad_ranges_say_what_is_wrong(start, end, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        days_between(start, end)


def test_only_known_assets_are_readable(lake: Lake) -> None:
    with pytest.raises(ValueError, match="cannot read 'tokens'"):
        read_asset("tokens", "2026-11-16", lake=lake)


def test_as_of_reads_a_day_as_it_was_before_a_rewrite(lake: Lake) -> None:
    """Time travel: the 16th rewritten; `as_of` an earlier version, or a time before the
    rewrite, gives the old rows, and the report of that day can be rebuilt from them."""
    before_version = lake.version("predictions")
    assert before_version is not None
    before_time = time.time()
    time.sleep(0.05)
    old = sorted(read_predictions("2026-11-16", lake=lake)["doc_id"])
    lake.write("predictions", "2026-11-16", predictions_frame(6, prefix="z", day="2026-11-16"))

    now = sorted(read_predictions("2026-11-16", lake=lake)["doc_id"])
    by_version = read_predictions("2026-11-16", lake=lake, as_of=before_version)
    moment = datetime.fromtimestamp(before_time, UTC)
    by_time = read_predictions("2026-11-16", lake=lake, as_of=moment.isoformat())
    assert len(now) == 6 and now != old
    assert sorted(by_version["doc_id"]) == old
    assert sorted(by_time["doc_id"]) == old


def test_a_read_racing_whole_day_rewrites_sees_the_old_or_the_new_day(lake: Lake) -> None:
    """A downstream job reading while the 17th is rewritten again and again (a whole-day part,
    then a micro-batch part beside it): every read is one generation of the day, never a mix
    of two or a part short."""
    day = "2026-11-17"
    backfilled = predictions_frame(7, prefix="n", day=day)
    old = sorted(read_predictions(day, lake=lake)["doc_id"])
    new = sorted(backfilled["doc_id"])
    stop = threading.Event()

    def rewrite() -> None:
        try:
            cycle()
        except Exception as error:  # the writer must not fail either
            errors.append(f"writer: {error!r}")

    def cycle() -> None:
        while not stop.is_set():
            lake.write("predictions", day, backfilled)  # the whole day, replacing both parts
            lake.write("predictions", day, predictions_frame(5, prefix="b", day=day))
            lake.write("predictions", day, predictions_frame(2, prefix="k", day=day), "topic-0-7-8")

    seen: list[list[str]] = []
    errors: list[str] = []
    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                seen.append(
                    sorted(read_predictions("2026-11-16", "2026-11-19", lake=lake)["doc_id"])
                )
            except FileNotFoundError as error:  # a part removed between listing and reading
                errors.append(str(error))
    finally:
        stop.set()
        writer.join()
    others = sorted(read_predictions("2026-11-16", lake=lake)["doc_id"]) + sorted(
        read_predictions("2026-11-19", lake=lake)["doc_id"]
    )
    day_part_only = sorted(predictions_frame(5, prefix="b", day=day)["doc_id"])
    valid = [sorted(others + ids) for ids in (old, new, day_part_only)]  # the three generations
    bad = [ids for ids in seen if ids not in valid]
    assert errors == [] and bad == [], (
        f"{len(errors) + len(bad)} of {len(seen) + len(errors)} reads saw a mix: {errors[:2]}"
    )
    assert len(seen) >= 20
    assert sum(ids == valid[1] for ids in seen) and sum(ids == valid[0] for ids in seen)


# -- downstream asset -------------------------------------------------------------------------


def test_sentiment_by_source_counts_scored_documents_without_duplicates() -> None:
    frame = predictions_frame(12)  # doc 5 is a duplicate; every 4th document is French
    out = sentiment_by_source(frame).to_dicts()
    assert [r["source"] for r in out] == sorted(r["source"] for r in out)
    kept = frame.filter(~pl.col("is_duplicate"))
    assert sum(r["n_docs"] for r in out) == kept.height == 11
    assert sum(r["n_scored"] for r in out) == kept["sentiment_label"].is_not_null().sum()
    empty_source = next(r for r in out if r["source"] == "")
    assert empty_source["n_docs"] == 1  # doc 7: French, so not scored
    assert empty_source["n_scored"] == 0 and empty_source["positive_share"] is None
    source_1 = next(r for r in out if r["source"] == "source_1")
    # docs 1, 3, 9, 11 with source_1 (5 is a duplicate, 7 has source ""): 1 and 9 English,
    # odd indexes are positive.
    assert (source_1["n_docs"], source_1["n_scored"], source_1["positive_share"]) == (4, 2, 1.0)


def test_downstream_asset_depends_on_predictions_in_its_own_group() -> None:
    node = defs.resolve_asset_graph().get(dg.AssetKey("sentiment_by_source"))
    assert node.group_name == "downstream"
    assert node.parent_keys == {dg.AssetKey("predictions")}
    assert node.partitions_def == daily_partitions


def test_downstream_asset_reads_its_own_day_through_the_io_manager(lake: Lake) -> None:
    resource = LakeResource(root=str(lake.root))
    predictions = dg.SourceAsset(
        "predictions", io_manager_key="lake_io_manager", partitions_def=daily_partitions
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [sentiment_by_source_asset, predictions],
            partition_key="2026-11-17",
            instance=instance,
            resources={"lake_io_manager": LakeIOManager(lake=resource)},
        )
    assert result.success
    stored = lake.read_day("sentiment_by_source", "2026-11-17")
    assert dict(stored.schema) == SENTIMENT_BY_SOURCE_SCHEMA
    day = pl.concat(
        [
            predictions_frame(5, prefix="b", day="2026-11-17"),
            predictions_frame(2, prefix="k", day="2026-11-17"),
        ]
    )
    assert stored.equals(sentiment_by_source(day))  # both parts of that day, no other day
    assert not lake.part_names("sentiment_by_source", "2026-11-16")
