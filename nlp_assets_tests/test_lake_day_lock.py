"""A range run (a single-run backfill: Spark's backfill_pipeline_spark, or any job launched with a
partition range) and a run of one of its days never interleave their writes.

Real processes on one Dagster instance (SQLite under a temporary DAGSTER_HOME), the real
`LakeResource` / `LakeIOManager`; the assets are two small stages that record when they run.
A range run carries no `dagster/partition` tag, so the instance's one-run-per-day limit cannot
hold it back: the lake's per-day lease does (see `nlp_assets.lake.DayLocks`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from nlp_assets.lake import Lake

RANGE = ("2026-03-01", "2026-03-03")
DAY = "2026-03-02"

RUN = r"""
import json, os, sys, time
import dagster as dg
import polars as pl
from nlp_assets.resources.lake import LakeIOManager, LakeResource

# argv reaches the run process only; step processes (multiprocess executor) read the env
lake_root, events, label, pause = (
    os.environ[f"TOY_{k}"] for k in ("LAKE", "EVENTS", "LABEL", "PAUSE")
)
daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")

def record(context, event):
    line = {"run": label, "run_id": context.run.run_id, "asset": context.asset_key.to_user_string(),
            "event": event, "t": time.time(), "pid": os.getpid()}
    with open(events, "a") as handle:
        handle.write(json.dumps(line) + "\n")

@dg.asset(partitions_def=daily, io_manager_key="lake_io_manager",
          backfill_policy=dg.BackfillPolicy.single_run())
def toy_raw(context: dg.AssetExecutionContext) -> pl.DataFrame:
    record(context, "start")
    time.sleep(float(pause))
    frame = pl.DataFrame({
        "doc_id": [f"{label}-{day}-{i}" for day in context.partition_keys for i in range(3)],
        "ingest_date": [day for day in context.partition_keys for _ in range(3)],
    })
    record(context, "end")
    return frame

@dg.asset(partitions_def=daily, io_manager_key="lake_io_manager",
          backfill_policy=dg.BackfillPolicy.single_run())
def toy_clean(context: dg.AssetExecutionContext, toy_raw: pl.DataFrame) -> pl.DataFrame:
    record(context, "start")
    time.sleep(float(pause))
    record(context, "end")
    return toy_raw

def toy_job():
    lake = LakeResource(root=lake_root)
    executor = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}
    return dg.Definitions(
        assets=[toy_raw, toy_clean],
        jobs=[dg.define_asset_job("toy", partitions_def=daily,
                                  executor_def=executor[os.environ["TOY_EXECUTOR"]])],
        resources={"lake": lake, "lake_io_manager": LakeIOManager(lake=lake)},
    ).resolve_job_def("toy")

if __name__ == "__main__":
    first, last = sys.argv[1:3]
    if first == last:
        tags = {"dagster/partition": first}
    else:
        tags = {"dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last}
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(toy_job), instance=instance, tags=tags)
    print("RUN", result.run_id, result.success, flush=True)
"""


def start_run(
    root: Path,
    label: str,
    first: str,
    last: str,
    pause: float = 1.0,
    executor: str = "in_process",
):
    script = root / "toy_runs.py"
    script.write_text(RUN)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(root / "dagster_home"),
        "TOY_LAKE": str(root / "lake"),
        "TOY_EVENTS": str(root / "events.jsonl"),
        "TOY_LABEL": label,
        "TOY_PAUSE": str(pause),
        "TOY_EXECUTOR": executor,
    }
    return subprocess.Popen(
        [sys.executable, str(script), first, last],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events(root: Path) -> list[dict]:
    path = root / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(root: Path, label: str, asset: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["run"] == label and e["asset"] == asset for e in events(root)):
            return
        time.sleep(0.05)
    pytest.fail(f"run {label} never started {asset}: {events(root)}")


def finish(process: subprocess.Popen, timeout: float = 180) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    (line,) = [line for line in out.splitlines() if line.startswith("RUN ")]
    _, run_id, success = line.split()
    assert success == "True", err[-3000:]
    return run_id


def span(root: Path, label: str) -> tuple[float, float]:
    times = [e["t"] for e in events(root) if e["run"] == label]
    return min(times), max(times)


def waiting_for(instance: dg.DagsterInstance, holder: str) -> bool:
    for run in instance.get_runs():
        if run.run_id != holder:
            for entry in instance.all_logs(run.run_id):
                if (
                    "waiting for the lake lock" in entry.user_message
                    and holder in entry.user_message
                ):
                    return True
    return False


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "dagster_home").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("first", "executor"),
    [
        ("range", "in_process"),
        ("day", "in_process"),
        # each step in its own process: between two steps no process of the first run beats a
        # heartbeat, and the instance's run status keeps the day
        ("range", "multiprocess"),
    ],
)
def test_a_range_run_and_a_run_of_one_of_its_days_never_interleave(
    root: Path, first: str, executor: str
) -> None:
    runs = {"range": RANGE, "day": (DAY, DAY)}
    second = "day" if first == "range" else "range"
    # the first run takes long enough for the second to start while it works (~16 s)
    early = start_run(root, first, *runs[first], pause=8, executor=executor)
    wait_for(root, first, "toy_raw")  # the first run is writing the day
    late = start_run(root, second, *runs[second], pause=0.5, executor=executor)
    early_id, late_id = finish(early), finish(late)

    early_end, late_start = span(root, first)[1], span(root, second)[0]
    assert late_start > early_end, (
        f"the {second} run worked from {late_start:.2f} while the {first} run still worked "
        f"until {early_end:.2f}: {events(root)}"
    )
    # the run that waited said why, naming the day and the run it waited for
    with dg.DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        logs = [entry.user_message for entry in instance.all_logs(late_id)]
    assert any(f"lake lock of day {DAY}" in m and early_id in m for m in logs), logs
    # the day holds what the later run wrote, the same ids in every stage
    lake = Lake(root / "lake")
    raw, clean = lake.read_day("toy_raw", DAY), lake.read_day("toy_clean", DAY)
    assert (
        sorted(raw["doc_id"])
        == sorted(clean["doc_id"])
        == [f"{second}-{DAY}-{i}" for i in range(3)]
    )


def test_a_killed_holder_keeps_its_days_until_its_run_is_marked_failed(root: Path) -> None:
    holder = start_run(root, "range", *RANGE, pause=60)
    wait_for(root, "range", "toy_raw")
    os.kill(holder.pid, signal.SIGKILL)  # the run worker dies: its run stays STARTED
    holder.communicate(timeout=30)
    (dead_id,) = {e["run_id"] for e in events(root) if e["run"] == "range"}

    waiter = start_run(root, "day", DAY, DAY, pause=0.1)
    with dg.DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        deadline = time.monotonic() + 120
        while not waiting_for(instance, dead_id):  # the day run says it waits for the dead run
            assert time.monotonic() < deadline, "the day run never waited for the dead run"
            time.sleep(0.5)
        time.sleep(3)
        assert not any(e["run"] == "day" for e in events(root)), "wrote while a run held the day"
        dead = instance.get_run_by_id(dead_id)
        assert dead is not None and dead.status == dg.DagsterRunStatus.STARTED
        released_at = time.time()
        instance.report_run_failed(dead)  # what run monitoring does for a dead run worker
    day_id = finish(waiter)
    assert span(root, "day")[0] > released_at
    assert sorted(Lake(root / "lake").read_day("toy_clean", DAY)["doc_id"]) == [
        f"day-{DAY}-{i}" for i in range(3)
    ]
    assert day_id != dead_id
