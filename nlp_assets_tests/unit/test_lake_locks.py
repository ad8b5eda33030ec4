"""The lake's per-day leases (`DayLocks`): a run holds the days it writes, a second owner
waits, a dead holder expires, a holder that lost its day refuses to write."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import nlp_assets.resources.lake as lake_resources
from nlp_assets.lake import DayLocks, Lake, LeaseLost

DAY = "2026-03-01"
ASSET = "cleaned_text"


def frame(*doc_ids: str) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": list(doc_ids), "n": [len(d) for d in doc_ids]})


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
