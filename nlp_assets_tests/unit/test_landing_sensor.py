"""The landing-folder sensor: one run per new or changed day once its files hold still (or the
day is marked complete); the cursor remembers each day's run and pending fingerprints."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets.kernels.ingest import COMPLETION_MARKER
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.folders import DayFolder
from nlp_assets.sensors.landing import MAX_RUNS_PER_TICK, day_fingerprint, landing_folder_sensor

#: Days inside the partitions whatever NLP_PARTITIONS_START says.
DAYS = daily_partitions.get_partition_keys()[: MAX_RUNS_PER_TICK + 3]
DAY = DAYS[0]


def tick(root: Path, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={"landing": DayFolder(root=str(root))},
    )
    result = landing_folder_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def settle(root: Path, cursor: str | None = None) -> dg.SensorResult:
    """Two ticks with nothing landing in between: a changed day runs on the second."""
    first = tick(root, cursor)
    assert not first.run_requests, "a day ran on the tick that first saw its files"
    return tick(root, first.cursor)


def land(root: Path, day: str, name: str = "docs.jsonl", text: str = '{"text": "hi"}\n') -> Path:
    path = root / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cursor_days(result: dg.SensorResult) -> dict[str, str]:
    """The fingerprint each day was last run with."""
    assert result.cursor is not None
    return json.loads(result.cursor)["done"]


def pending_days(result: dg.SensorResult) -> dict[str, str]:
    """Fingerprints seen once, waiting to be seen again."""
    assert result.cursor is not None
    return json.loads(result.cursor)["pending"]


def requested_days(result: dg.SensorResult) -> list[str]:
    return [request.partition_key for request in result.run_requests or []]


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    root.mkdir()
    return root


def test_enough_partitions_for_these_tests() -> None:
    assert len(DAYS) == MAX_RUNS_PER_TICK + 3


def test_new_day_gives_one_run_for_that_partition_once_its_files_hold_still(
    landing: Path,
) -> None:
    land(landing, DAY)
    land(landing, DAY, "more.csv", "text\nhello\n")
    fingerprint = day_fingerprint(landing / DAY)

    first = tick(landing)
    assert not first.run_requests
    assert json.loads(first.cursor) == {"done": {}, "pending": {DAY: fingerprint}}

    result = tick(landing, first.cursor)

    assert result.skip_reason is None
    [request] = result.run_requests
    assert request.partition_key == DAY
    assert request.run_key == f"landing:{DAY}:{fingerprint}"
    assert request.tags["nlp/trigger"] == "landing_folder"
    assert json.loads(result.cursor) == {"done": {DAY: fingerprint}, "pending": {}}


def test_a_file_still_being_copied_gives_no_run_until_it_stops_changing(landing: Path) -> None:
    path = land(landing, DAY, "big.jsonl", '{"text": "first half')
    first = tick(landing)
    with path.open("a") as handle:  # the copy goes on between two ticks
        handle.write(' and the rest"}\n')
    second = tick(landing, first.cursor)
    third = tick(landing, second.cursor)  # nothing changed since the second tick

    assert not first.run_requests
    assert not second.run_requests
    assert pending_days(first) != pending_days(second) == {DAY: day_fingerprint(landing / DAY)}
    assert "waiting" in second.skip_reason.skip_message
    assert requested_days(third) == [DAY]
    assert third.run_requests[0].run_key.endswith(day_fingerprint(landing / DAY))
    assert json.loads(third.cursor) == {
        "done": {DAY: day_fingerprint(landing / DAY)},
        "pending": {},
    }


def test_a_completion_marker_runs_the_day_on_the_tick_that_sees_it(landing: Path) -> None:
    land(landing, DAY)
    first = tick(landing)
    assert not first.run_requests

    land(landing, DAY, "late.jsonl")
    land(landing, DAY, COMPLETION_MARKER, "")
    marked = tick(landing, first.cursor)

    assert requested_days(marked) == [DAY]
    assert json.loads(marked.cursor) == {
        "done": {DAY: day_fingerprint(landing / DAY)},
        "pending": {},
    }
    # the marker is not data: it does not change the fingerprint
    (landing / DAY / COMPLETION_MARKER).unlink()
    assert not tick(landing, marked.cursor).run_requests


def test_a_cursor_of_the_old_shape_is_read_as_the_days_already_run(landing: Path) -> None:
    land(landing, DAY)
    old = json.dumps({DAY: day_fingerprint(landing / DAY)})  # before pending fingerprints

    result = tick(landing, old)

    assert not result.run_requests
    assert json.loads(result.cursor) == {"done": json.loads(old), "pending": {}}


def test_unchanged_day_is_not_run_again(landing: Path) -> None:
    land(landing, DAY)
    first = settle(landing)

    second = tick(landing, first.cursor)

    assert not second.run_requests
    assert second.skip_reason is not None
    assert "no new or changed files" in second.skip_reason.skip_message
    assert second.cursor == first.cursor


def test_added_file_gives_a_new_run(landing: Path) -> None:
    land(landing, DAY)
    first = settle(landing)

    land(landing, DAY, "late.txt", "a late document\n")
    second = settle(landing, first.cursor)

    [request] = second.run_requests
    assert request.partition_key == DAY
    assert request.run_key != first.run_requests[0].run_key
    assert cursor_days(second)[DAY] != cursor_days(first)[DAY]


def test_changed_file_gives_a_new_run(landing: Path) -> None:
    path = land(landing, DAY)
    first = settle(landing)

    path.write_text('{"text": "hi"}\n{"text": "corrected"}\n')
    second = settle(landing, first.cursor)

    assert requested_days(second) == [DAY]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key


def test_hidden_files_do_not_count(landing: Path) -> None:
    land(landing, DAY)
    first = settle(landing)

    land(landing, DAY, ".docs.jsonl.partial", "half an upload")
    again = tick(landing, first.cursor)
    assert not again.run_requests
    assert pending_days(again) == {}


def test_only_changed_days_run(landing: Path) -> None:
    for day in DAYS[:3]:
        land(landing, day)
    first = settle(landing)
    assert requested_days(first) == DAYS[:3]

    land(landing, DAYS[1], "late.txt", "late\n")
    second = settle(landing, first.cursor)

    assert requested_days(second) == [DAYS[1]]
    assert set(cursor_days(second)) == set(DAYS[:3])


def test_folders_not_named_as_a_day_are_ignored(landing: Path) -> None:
    for name in ("incoming", "2026-13-01", "2026-02-30", "20260105"):
        land(landing, name)
    (landing / DAYS[1]).write_text("a file named like a day, not a folder")

    first = tick(landing)
    result = tick(landing, first.cursor)

    assert not result.run_requests
    assert result.skip_reason is not None
    assert json.loads(result.cursor) == {"done": {}, "pending": {}}


def test_days_outside_the_partitions_are_not_requested(landing: Path) -> None:
    before_start = (date.fromisoformat(DAY) - timedelta(days=1)).isoformat()
    far_future = (date.today() + timedelta(days=365)).isoformat()
    land(landing, before_start)
    land(landing, far_future)
    land(landing, DAY)

    result = settle(landing)

    assert requested_days(result) == [DAY]
    assert set(cursor_days(result)) == {DAY}


def test_more_changed_days_than_a_tick_allows_are_spread_over_ticks(landing: Path) -> None:
    for day in DAYS:  # MAX_RUNS_PER_TICK + 3 days
        land(landing, day)

    first = settle(landing)
    assert len(first.run_requests) == MAX_RUNS_PER_TICK
    # the cursor records exactly the days that got a run: the others are still pending
    assert set(cursor_days(first)) == set(requested_days(first))
    assert set(pending_days(first)) == set(DAYS) - set(requested_days(first))

    second = tick(landing, first.cursor)  # they held still: they run at once
    assert len(second.run_requests) == len(DAYS) - MAX_RUNS_PER_TICK

    third = tick(landing, second.cursor)
    assert not third.run_requests

    every_run = requested_days(first) + requested_days(second)
    assert sorted(every_run) == sorted(DAYS)  # none lost, none twice
    assert cursor_days(third) == {day: day_fingerprint(landing / day) for day in DAYS}


def test_missing_landing_root_gives_no_runs(tmp_path: Path) -> None:
    result = tick(tmp_path / "not-there")
    assert not result.run_requests
    assert result.skip_reason is not None
    assert cursor_days(result) == {}


def test_cursor_of_days_whose_folder_went_away_is_kept(landing: Path) -> None:
    cursor = json.dumps({"done": {DAYS[5]: "0123456789abcdef"}, "pending": {}})
    result = tick(landing, cursor)
    assert not result.run_requests
    assert cursor_days(result) == {DAYS[5]: "0123456789abcdef"}


def test_empty_day_folder_waits_for_files_but_emptied_day_is_recomputed(landing: Path) -> None:
    (landing / DAY).mkdir()
    first = settle(landing)
    assert requested_days(first) == []
    assert cursor_days(first) == {}

    path = land(landing, DAY)
    landed = settle(landing, first.cursor)
    assert requested_days(landed) == [DAY]

    path.unlink()  # every file of the day removed: the day must be recomputed (empty)
    emptied = settle(landing, landed.cursor)
    assert requested_days(emptied) == [DAY]


def test_a_symbolic_link_counts_as_a_change_without_being_followed(
    tmp_path: Path, landing: Path
) -> None:
    land(landing, DAY)
    first = settle(landing)
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"text": "x"}\n')
    (landing / DAY / "link.jsonl").symlink_to(outside)
    linked = day_fingerprint(landing / DAY)

    outside.write_text('{"text": "the target changed"}\n')  # the link itself did not

    assert linked != cursor_days(first)[DAY]  # the link is seen: its run quarantines it
    assert day_fingerprint(landing / DAY) == linked
