"""Attacks on the Delta lake that `test_lake.py` leaves out: a writer SIGKILLed exactly between
its data files and its commit, writers racing on the same part (a true conflict, retried),
vacuum beside a writer whose files are not committed yet, and a dead-letter range's app
transaction against its ordinary attempt."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from nlp_assets.lake import DAY_PART, Lake

DAY = "2026-03-01"
ASSET = "cleaned_text"
REPO = Path(__file__).resolve().parents[2]


def frame(*doc_ids: str) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": list(doc_ids), "n": [len(d) for d in doc_ids]})


def block(name: str, rows: int = 4) -> list[str]:
    return [f"{name}-{i}" for i in range(rows)]


def data_on_disk(lake: Lake, asset: str = ASSET) -> set[str]:
    """Every data file in the table's day folders: live, superseded or orphaned."""
    folder = Path(lake.table_uri(asset))
    return {str(p) for p in folder.glob("ingest_date=*/*") if p.is_file()}


def live_files(lake: Lake, asset: str = ASSET) -> set[str]:
    table = lake.table(asset)
    assert table is not None
    return {u.removeprefix("file://") for u in table.file_uris()}


# a writer killed between its files and its commit --------------------------------------------
KILLED_WRITER = r"""
import os, signal, sys, threading, time
from pathlib import Path
import polars as pl
from nlp_assets.lake import Lake

root, mode, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
lake = Lake(root)
day_folder = Path(lake.table_uri("cleaned_text")) / "ingest_date=2026-03-01"

def on_disk():
    return {p for p in day_folder.iterdir() if p.is_file()}

if mode == "on-file":
    # SIGKILL as soon as the first write has a data file on disk: before its commit
    before = on_disk()
    def watch():
        while True:
            if on_disk() - before:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.0002)
    threading.Thread(target=watch, daemon=True).start()
print("ready", flush=True)
for k in range(100_000):  # until killed
    ids = [f"new-p{k}-{i}" for i in range(rows)]
    frame = pl.DataFrame({"doc_id": ids, "n": list(range(rows))})
    lake.write("cleaned_text", "2026-03-01", frame, f"p{k}")
    print(f"committed p{k}", flush=True)
"""


def run_killed_writer(root: Path, mode: str, delay: float, rows: int) -> list[str]:
    """The writer in its own process, SIGKILLed (by itself on `on-file`, else after `delay`
    seconds); the parts it printed as committed."""
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(root), mode, str(rows)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    if mode == "delay":
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
    out, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, err
    return [line.split()[1] for line in out.splitlines() if line.startswith("committed")]


@pytest.mark.parametrize(("mode", "delay"), [("on-file", 0.0), ("delay", 0.3), ("delay", 1.0)])
def test_a_writer_killed_before_its_commit_leaves_a_committed_state_and_vacuum_takes_orphans(
    tmp_path: Path, mode: str, delay: float
) -> None:
    # `on-file`: the writer's watcher thread kills it when its first data file is on disk; on
    # a busy machine the thread can get the GIL only after that write's commit. Such a late kill
    # is still checked like a `delay` one, and the writer runs again (at most 3 times) until
    # the kill lands between the file and its commit, the case this mode exists for.
    for attempt in range(3):
        landed_before_commit = killed_writer_leaves_a_committed_state(
            tmp_path / f"attempt-{attempt}", mode, delay
        )
        if mode != "on-file" or landed_before_commit:
            return
    raise AssertionError("killed before the commit, with a file on disk: never, in 3 attempts")


def killed_writer_leaves_a_committed_state(tmp_path: Path, mode: str, delay: float) -> bool:
    """One killed writer, checked; whether it was killed with a data file on disk and no commit
    of it (the state is checked either way)."""
    rows = 20_000  # a few MB a part: the kill often lands while a file is on disk uncommitted
    root = tmp_path / "lake"
    old = {DAY_PART: block("old-day"), "p0": block("old-p0"), "p1": block("old-p1")}
    for part, ids in old.items():
        Lake(root).write(ASSET, DAY, frame(*ids), part)
    before = Lake(root).version(ASSET)
    assert before is not None

    acknowledged = run_killed_writer(root, mode, delay, rows)

    lake = Lake(root)
    version = lake.version(ASSET)
    assert version is not None
    written = [f"p{k}" for k in range(version - before)]  # one commit a part, in order
    assert set(acknowledged) <= set(written), "an acknowledged commit is lost"
    assert len(written) - len(acknowledged) <= 1  # killed between a commit and its print
    parts = lake.read_parts(ASSET, DAY, columns=["doc_id"])
    assert sorted(parts) == sorted({*old, *written})
    for part, got in parts.items():  # each part whole: the new write's rows or the old ones
        expected = [f"new-{part}-{i}" for i in range(rows)] if part in written else old[part]
        assert sorted(got["doc_id"]) == sorted(expected), part
    orphans = data_on_disk(lake) - live_files(lake)
    landed_before_commit = version == before and bool(orphans)
    # the orphans are never read; vacuum deletes them and nothing live
    vacuumed = {Path(f).name for f in lake.vacuum(ASSET, retention_hours=0)}
    assert {Path(f).name for f in orphans} <= vacuumed
    assert data_on_disk(lake) == live_files(lake)
    after = lake.read_parts(ASSET, DAY, columns=["doc_id"])
    assert {p: sorted(f["doc_id"]) for p, f in after.items()} == {
        p: sorted(f["doc_id"]) for p, f in parts.items()
    }
    lake.write(ASSET, DAY, frame("next"), "p99")  # still writable
    assert lake.read_part(ASSET, DAY, "p99")["doc_id"].to_list() == ["next"]
    return landed_before_commit


# writers racing on the same part ---------------------------------------------------------------
SAME_PART_WRITER = r"""
import sys
import polars as pl
from nlp_assets.lake import Lake

root, name, count, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lake = Lake(root)
for k in range(count):
    ids = [f"{name}-{k}-{i}" for i in range(rows)]
    lake.write("cleaned_text", "2026-03-01", pl.DataFrame({"doc_id": ids, "n": [k] * rows}), "same")
    print(f"committed {name}-{k}", flush=True)
"""


def test_writers_racing_on_the_same_part_leave_one_write_whole(tmp_path: Path) -> None:
    """A true conflict: each write replaces the rows the other one adds. A retried commit is
    applied on top of the winner, as if written after it: the part ends as exactly one
    write's rows, never both, never none, and every write is a commit of its own."""
    root, writers, count, rows = tmp_path / "lake", 3, 6, 40
    Lake(root).write(ASSET, DAY, frame("other"), part="keep")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SAME_PART_WRITER, str(root), f"w{w}", str(count), str(rows)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for w in range(writers)
    ]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert out.count("committed") == count

    lake = Lake(root)
    assert lake.part_names(ASSET, DAY) == ["keep", "same"]
    got = sorted(lake.read_part(ASSET, DAY, "same")["doc_id"])
    last = [sorted(f"w{w}-{count - 1}-{i}" for i in range(rows)) for w in range(writers)]
    assert got in last, f"not one writer's last write: {got[:3]}... ({len(got)} rows)"
    assert_frame_equal(lake.read_part(ASSET, DAY, "keep"), frame("other"))
    assert lake.version(ASSET) == writers * count  # no commit lost, none doubled


# vacuum beside a writer ---------------------------------------------------------------------
def test_vacuum_keeps_files_younger_than_the_retention_even_uncommitted(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write(ASSET, DAY, frame("a"), part="p0")
    lake.write(ASSET, DAY, frame("b"), part="p1")
    lake.write(ASSET, DAY, frame("a2"), part="p0")  # supersedes p0's first file
    live = live_files(lake)
    superseded = data_on_disk(lake) - live
    assert len(live) == 2 and len(superseded) == 1
    # a file of a writer still writing, not committed yet
    pending = Path(next(iter(live))).with_name("part-00000-pending-writer.c000.zstd.parquet")
    shutil.copy(next(iter(live)), pending)

    assert lake.vacuum(ASSET, retention_hours=1) == []  # everything younger than an hour
    assert data_on_disk(lake) == live | superseded | {str(pending)}
    hours_ago = time.time() - 2 * 3600
    os.utime(pending, (hours_ago, hours_ago))  # its writer died two hours ago
    assert [Path(f).name for f in lake.vacuum(ASSET, retention_hours=1)] == [pending.name]

    deleted = {Path(f).name for f in lake.vacuum(ASSET, retention_hours=0)}
    assert deleted == {Path(f).name for f in superseded}
    assert data_on_disk(lake) == live  # never a live file
    assert sorted(lake.read_day(ASSET, DAY)["doc_id"]) == ["a2", "b"]


# a dead-letter range against its ordinary attempt ---------------------------------------------
def test_a_dead_letter_version_supersedes_the_ordinary_one_and_not_the_reverse(
    tmp_path: Path,
) -> None:
    """`Lake(part_txn=...)`, as a Kafka micro-batch run builds it: every write of the range's
    part carries its app transaction, version 2*end (ordinary) or 2*end+1 (dead-letter)."""
    root, app, end, part = tmp_path / "lake", "nlp-kafka:t:0:g1:100", 160, "offsets_100-160"
    ordinary = Lake(root, part_txn=(part, app, 2 * end))
    dead_letter = Lake(root, part_txn=(part, app, 2 * end + 1))

    assert not ordinary.write(ASSET, DAY, frame("a", "poison"), part).skipped
    replaced = dead_letter.write(ASSET, DAY, frame("a"), part)
    assert not replaced.skipped
    late = ordinary.write(ASSET, DAY, frame("a", "poison"), part)  # a zombie, finishing late
    assert late.skipped and late.rows == 0 and late.version == replaced.version
    assert dead_letter.write(ASSET, DAY, frame("again"), part).skipped  # its own replay
    assert_frame_equal(Lake(root).read_day(ASSET, DAY), frame("a"))
    assert Lake(root).transaction_version(ASSET, app) == 2 * end + 1
    # other parts of the same lake carry no transaction
    assert not ordinary.write(ASSET, DAY, frame("day"), "other").skipped
    assert Lake(root).version(ASSET) == (replaced.version or 0) + 1
