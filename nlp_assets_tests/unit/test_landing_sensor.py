"""The landing-folder sensor: one run per new or changed day, the cursor remembers each day."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets.partitions import daily_partitions
from resources.folders import DayFolder
from sensors.landing import MAX_RUNS_PER_TICK, day_fingerprint, landing_folder_sensor

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


def land(root: Path, day: str, name: str = "docs.jsonl", text: str = '{"text": "hi"}\n') -> Path:
    path = root / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def cursor_days(result: dg.SensorResult) -> dict[str, str]:
    assert result.cursor is not None
    return json.loads(result.cursor)


def requested_days(result: dg.SensorResult) -> list[str]:
    return [request.partition_key for request in result.run_requests or []]


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    root.mkdir()
    return root


def test_enough_partitions_for_these_tests() -> None:
    assert len(DAYS) == MAX_RUNS_PER_TICK + 3


def test_new_day_gives_one_run_for_that_partition(landing: Path) -> None:
    land(landing, DAY)
    land(landing, DAY, "more.csv", "text\nhello\n")

    result = tick(landing)

    assert result.skip_reason is None
    [request] = result.run_requests
    assert request.partition_key == DAY
    assert DAY in request.run_key
    assert request.tags["nlp/trigger"] == "landing_folder"
    assert cursor_days(result) == {DAY: day_fingerprint(landing / DAY)}


def test_unchanged_day_is_not_run_again(landing: Path) -> None:
    land(landing, DAY)
    first = tick(landing)

    second = tick(landing, first.cursor)

    assert not second.run_requests
    assert second.skip_reason is not None
    assert "no new or changed files" in second.skip_reason.skip_message
    assert second.cursor == first.cursor


def test_added_file_gives_a_new_run(landing: Path) -> None:
    land(landing, DAY)
    first = tick(landing)

    land(landing, DAY, "late.txt", "a late document\n")
    second = tick(landing, first.cursor)

    [request] = second.run_requests
    assert request.partition_key == DAY
    assert request.run_key != first.run_requests[0].run_key
    assert cursor_days(second)[DAY] != cursor_days(first)[DAY]


def test_changed_file_gives_a_new_run(landing: Path) -> None:
    path = land(landing, DAY)
    first = tick(landing)

    path.write_text('{"text": "hi"}\n{"text": "corrected"}\n')
    second = tick(landing, first.cursor)

    assert requested_days(second) == [DAY]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key


def test_hidden_files_do_not_count(landing: Path) -> None:
    land(landing, DAY)
    first = tick(landing)

    land(landing, DAY, ".docs.jsonl.partial", "half an upload")
    assert not tick(landing, first.cursor).run_requests


def test_only_changed_days_run(landing: Path) -> None:
    for day in DAYS[:3]:
        land(landing, day)
    first = tick(landing)
    assert requested_days(first) == DAYS[:3]

    land(landing, DAYS[1], "late.txt", "late\n")
    second = tick(landing, first.cursor)

    assert requested_days(second) == [DAYS[1]]
    assert set(cursor_days(second)) == set(DAYS[:3])


def test_folders_not_named_as_a_day_are_ignored(landing: Path) -> None:
    for name in ("incoming", "2026-13-01", "2026-02-30", "20260105"):
        land(landing, name)
    (landing / DAYS[1]).write_text("a file named like a day, not a folder")

    result = tick(landing)

    assert not result.run_requests
    assert result.skip_reason is not None
    assert cursor_days(result) == {}


def test_days_outside_the_partitions_are_not_requested(landing: Path) -> None:
    before_start = (date.fromisoformat(DAY) - timedelta(days=1)).isoformat()
    far_future = (date.today() + timedelta(days=365)).isoformat()
    land(landing, before_start)
    land(landing, far_future)
    land(landing, DAY)

    result = tick(landing)

    assert requested_days(result) == [DAY]
    assert set(cursor_days(result)) == {DAY}


def test_more_changed_days_than_a_tick_allows_are_spread_over_ticks(landing: Path) -> None:
    for day in DAYS:  # MAX_RUNS_PER_TICK + 3 days
        land(landing, day)

    first = tick(landing)
    assert len(first.run_requests) == MAX_RUNS_PER_TICK
    # the cursor records exactly the days that got a run: the others are still "changed"
    assert set(cursor_days(first)) == set(requested_days(first))

    second = tick(landing, first.cursor)
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
    cursor = json.dumps({DAYS[5]: "0123456789abcdef"})
    result = tick(landing, cursor)
    assert not result.run_requests
    assert cursor_days(result) == {DAYS[5]: "0123456789abcdef"}


def test_empty_day_folder_waits_for_files_but_emptied_day_is_recomputed(landing: Path) -> None:
    (landing / DAY).mkdir()
    first = tick(landing)
    assert requested_days(first) == []
    assert cursor_days(first) == {}

    path = land(landing, DAY)
    landed = tick(landing, first.cursor)
    assert requested_days(landed) == [DAY]

    path.unlink()  # every file of the day removed: the day must be recomputed (empty)
    emptied = tick(landing, landed.cursor)
    assert requested_days(emptied) == [DAY]
