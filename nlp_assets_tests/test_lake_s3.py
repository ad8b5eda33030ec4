"""The lake on S3: a local S3 server (moto, `nlp_assets_tests/s3_server.py`), real processes.

moto stands in for Amazon S3 (see s3_server.py for what it does and does not reproduce). The
lake's S3 access is configured only by the standard AWS_* variables the `s3_lake` fixture sets:
delta-rs reads them itself, s3fs gets the endpoint and region from `nlp_assets.settings`. Commits
are delta-rs's conditional PUT (If-None-Match: *) of the next log entry; the tests check moto
refuses the second one, and that what the lake builds on it holds: racing writers lose nothing,
a reader sees one version, a killed writer leaves only orphans, which vacuum removes.

Writers run in spawned processes (delta-rs's runtime does not survive a fork).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, write_deltalake
from deltalake.exceptions import CommitFailedError
from polars.testing import assert_frame_equal

from nlp_assets import settings
from nlp_assets.lake import DAY_PART, DayLocks, Lake, LeaseLost
from nlp_assets.lake.locks import create_exclusive, lake_path
from nlp_assets_tests.s3_server import SECRET_KEY, S3Server

pytestmark = pytest.mark.s3

DAY = "2026-03-01"
OTHER_DAY = "2026-03-02"
ASSET = "cleaned_text"
#: How long a test waits for a child process before it fails (a hang, never a measurement).
CHILD_TIMEOUT_S = 120

_spawn = mp.get_context("spawn")


def frame(tag: str, rows: int, *, start: int = 0, generation: int = 0) -> pl.DataFrame:
    """`rows` documents named after `tag`: ids are unique across tags."""
    return pl.DataFrame(
        {
            "doc_id": [f"{tag}-{i:05d}" for i in range(start, start + rows)],
            "n": pl.Series(range(start, start + rows), dtype=pl.Int64),
            "generation": pl.Series([generation] * rows, dtype=pl.Int64),
        }
    )


def by_id(data: pl.DataFrame) -> pl.DataFrame:
    return data.sort("doc_id")


def bucket_keys(server: S3Server, root: str) -> set[str]:
    """Every object key of the lake's bucket under its root (boto3, not the lake's code)."""
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    keys: set[str] = set()
    for page in (
        server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    ):
        keys |= {item["Key"] for item in page.get("Contents", [])}
    return keys


def join(process: Any) -> None:
    process.join(CHILD_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        pytest.fail(f"{process.name} did not finish within {CHILD_TIMEOUT_S} s")
    assert process.exitcode == 0, f"{process.name} exited with {process.exitcode}"


# the round trip -----------------------------------------------------------------------------------
def test_round_trip_on_s3_parts_whole_day_reads_and_time_travel(
    s3_lake: str, s3_server: S3Server
) -> None:
    lake = Lake(s3_lake)
    assert lake.root.protocol == "s3"
    assert lake.table_uri(ASSET) == f"{s3_lake}/{ASSET}"

    first = lake.write(ASSET, DAY, frame("a", 40), "p1")
    lake.write(ASSET, DAY, frame("b", 30), "p2")
    lake.write(ASSET, OTHER_DAY, frame("c", 20), "p1")
    assert first.version == 0
    assert lake.version(ASSET) == 2
    # the table is on the server: its log and data files are objects of the bucket
    keys = bucket_keys(s3_server, s3_lake)
    assert f"{s3_lake.split('/', 3)[3]}/{ASSET}/_delta_log/00000000000000000002.json" in keys
    assert any(f"/{ASSET}/ingest_date={DAY}/" in k and k.endswith(".parquet") for k in keys)

    assert lake.part_names(ASSET, DAY) == ["p1", "p2"]
    assert_frame_equal(lake.read_part(ASSET, DAY, "p2"), frame("b", 30))
    assert_frame_equal(
        by_id(lake.read_day(ASSET, DAY)), by_id(pl.concat([frame("a", 40), frame("b", 30)]))
    )
    assert lake.day_rows(ASSET, DAY) == 70
    assert all(
        uri.startswith(f"{s3_lake}/{ASSET}/ingest_date={DAY}/") for uri in lake.files(ASSET, [DAY])
    )

    # a retried part replaces its earlier attempt; a whole-day run replaces the day
    lake.write(ASSET, DAY, frame("a", 25, start=100), "p1")
    assert lake.day_rows(ASSET, DAY) == 55
    lake.write(ASSET, DAY, frame("w", 10), DAY_PART)
    assert lake.part_names(ASSET, DAY) == [DAY_PART]
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("w", 10))
    assert_frame_equal(lake.read_day(ASSET, OTHER_DAY), frame("c", 20))  # untouched
    assert lake.version(ASSET) == 4

    # time travel: by version and by timestamp, from the log on S3
    assert_frame_equal(
        by_id(lake.read_day(ASSET, DAY, as_of=2)),
        by_id(pl.concat([frame("a", 40), frame("b", 30)])),
    )
    assert lake.read_parts(ASSET, DAY, as_of=0).keys() == {"p1"}
    assert_frame_equal(lake.read_day(ASSET, DAY, as_of=datetime.now(UTC)), frame("w", 10))

    # several days in one commit, quarantine, an unpartitioned table, maintenance
    both = pl.concat(
        [
            frame("x", 5).with_columns(ingest_date=pl.lit(date.fromisoformat(DAY))),
            frame("y", 6).with_columns(ingest_date=pl.lit(date.fromisoformat(OTHER_DAY))),
        ]
    )
    lake.write_days("tokens", [DAY, OTHER_DAY], both)
    assert lake.rows_by_day("tokens") == {DAY: 5, OTHER_DAY: 6}
    lake.write_quarantine(ASSET, DAY, frame("q", 3))
    assert lake.read_quarantine(ASSET, DAY).height == 3
    lake.write("sentiment_model", None, frame("m", 4))
    assert_frame_equal(lake.read_part("sentiment_model", None), frame("m", 4))
    assert lake.tables() == [ASSET, "quarantine/cleaned_text", "sentiment_model", "tokens"]
    lake.compact(ASSET, DAY)
    lake.checkpoint(ASSET)
    assert_frame_equal(lake.read_day(ASSET, DAY), frame("w", 10))


# two writers racing -------------------------------------------------------------------------------
WRITES_PER_WRITER = 6


def _writes_of(writer: int) -> list[tuple[str, str, pl.DataFrame]]:
    """(day, part, frame) a racing writer commits: its own parts of two days, and the part
    `shared` that both writers replace."""
    writes = []
    for k in range(WRITES_PER_WRITER):
        day = DAY if k % 3 else OTHER_DAY
        writes.append((day, f"w{writer}-{k}", frame(f"w{writer}-{k}", 50 + 10 * k)))
    writes.insert(3, (DAY, "shared", frame(f"shared-by-{writer}", 33 + writer)))
    return writes


def _racing_writer(root: str, writer: int, start: Any) -> None:
    lake = Lake(root)
    start.wait(CHILD_TIMEOUT_S)
    for day, part, data in _writes_of(writer):
        lake.write(ASSET, day, data, part)


def test_two_writer_processes_racing_on_one_table_lose_nothing(s3_lake: str) -> None:
    start = _spawn.Event()
    writers = [
        _spawn.Process(target=_racing_writer, args=(s3_lake, w, start), name=f"writer-{w}")
        for w in (0, 1)
    ]
    for process in writers:
        process.start()
    time.sleep(0.5)  # both are importing; the event lets them go together
    start.set()
    for process in writers:
        join(process)

    lake = Lake(s3_lake)
    writes = _writes_of(0) + _writes_of(1)
    # every write is one commit of its own (the table was created by one of them): none lost,
    # none applied twice
    assert lake.version(ASSET) == len(writes) - 1
    # the same table written one write after the other
    sequential = Lake(s3_lake.rsplit("/", 1)[0] + "/sequential")
    for day, part, data in writes:
        sequential.write(ASSET, day, data, part)
    for day in (DAY, OTHER_DAY):
        raced, alone = lake.read_parts(ASSET, day), sequential.read_parts(ASSET, day)
        assert raced.keys() == alone.keys()
        for part in alone:
            if part == "shared":  # whichever writer committed it last, whole
                assert any(raced[part].equals(frame(f"shared-by-{w}", 33 + w)) for w in (0, 1)), (
                    raced[part]
                )
            else:
                assert_frame_equal(raced[part], alone[part])
        day_frame = lake.read_day(ASSET, day)
        assert day_frame["doc_id"].n_unique() == day_frame.height  # no duplicates
    assert (
        lake.day_rows(ASSET, DAY) + lake.day_rows(ASSET, OTHER_DAY)
        == sum(d.height for _, p, d in writes if p != "shared")
        + lake.read_part(ASSET, DAY, "shared").height
    )


# a reader during commits --------------------------------------------------------------------------
DAY_WRITES = 8


def _day_size(generation: int) -> int:
    return 3_000 + 500 * generation


def _day_writer(root: str, ready: Any) -> None:
    lake = Lake(root)
    ready.wait(CHILD_TIMEOUT_S)
    for generation in range(1, DAY_WRITES + 1):
        lake.write(ASSET, DAY, frame("d", _day_size(generation), generation=generation))


def test_a_reader_during_commits_sees_one_whole_version(s3_lake: str) -> None:
    lake = Lake(s3_lake)
    lake.write(ASSET, DAY, frame("d", _day_size(0), generation=0))
    ready = _spawn.Event()
    writer = _spawn.Process(target=_day_writer, args=(s3_lake, ready), name="day-writer")
    writer.start()
    ready.set()
    seen: list[tuple[int, int]] = []  # (table version, generation) of every read
    while writer.is_alive() or not seen:
        table = lake.table(ASSET)
        assert table is not None
        version = table.version()
        day = lake.read_day(ASSET, DAY, as_of=version)
        generations = day["generation"].unique().to_list()
        # one commit's rows, all of them: never two generations, never a part of one
        assert len(generations) == 1, generations
        assert day.height == _day_size(generations[0])
        assert day["doc_id"].n_unique() == day.height
        seen.append((version, generations[0]))
    join(writer)
    assert seen == sorted(seen)  # versions and generations only ever move forward
    final = lake.read_day(ASSET, DAY)
    assert final["generation"].unique().to_list() == [DAY_WRITES]
    assert lake.version(ASSET) == DAY_WRITES


# a writer killed between writing its files and committing -----------------------------------------
def _two_phase_writer(root: str, found: Any) -> None:
    """Writes a part's Parquet files into the table's day folder the way a Spark executor does,
    reports them, then waits to commit them (it is killed before it does)."""
    lake = Lake(root)
    table = f"{lake.table_uri(ASSET)}/ingest_date={DAY}"
    fs = lake_path(table).fs
    paths = []
    for i in range(3):
        path = f"{table.removeprefix('s3://')}/part-{i:05d}-killed-writer.zstd.parquet"
        data = frame(f"orphan{i}", 200).with_columns(part=pl.lit("p2"))
        with fs.open(path, "wb") as handle:
            pq.write_table(data.to_arrow(), handle, compression="zstd")
        paths.append(f"s3://{path}")
    found.put(paths)
    time.sleep(CHILD_TIMEOUT_S)  # the commit (create_write_transaction) would come here


def test_a_writer_killed_before_its_commit_leaves_orphans_that_vacuum_removes(
    s3_lake: str, s3_server: S3Server
) -> None:
    lake = Lake(s3_lake)
    lake.write(ASSET, DAY, frame("p0", 100), "p0")
    lake.write(ASSET, DAY, frame("p1", 120), "p1")
    before = by_id(lake.read_day(ASSET, DAY))
    live = set(lake.files(ASSET, [DAY]))

    found = _spawn.Queue()
    writer = _spawn.Process(target=_two_phase_writer, args=(s3_lake, found), name="killed")
    writer.start()
    orphans = found.get(timeout=CHILD_TIMEOUT_S)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(CHILD_TIMEOUT_S)
    assert writer.exitcode == -signal.SIGKILL

    # the files are in the bucket, the table knows nothing of them
    bucket = s3_lake.removeprefix("s3://").split("/", 1)[0]
    keys = bucket_keys(s3_server, s3_lake)
    assert {o.removeprefix(f"s3://{bucket}/") for o in orphans} <= keys
    assert lake.version(ASSET) == 1
    assert set(lake.files(ASSET, [DAY])) == live
    assert_frame_equal(by_id(lake.read_day(ASSET, DAY)), before)
    assert lake.part_names(ASSET, DAY) == ["p0", "p1"]

    # vacuum removes exactly the orphans; the live files and the rows stay
    removed = lake.vacuum(ASSET, retention_hours=0)
    assert sorted(Path(r).name for r in removed) == sorted(Path(o).name for o in orphans)
    left = bucket_keys(s3_server, s3_lake)
    assert not {o.removeprefix(f"s3://{bucket}/") for o in orphans} & left
    assert {uri.removeprefix(f"s3://{bucket}/") for uri in live} <= left
    assert_frame_equal(by_id(lake.read_day(ASSET, DAY)), before)

    # nothing lost: the killed run's retry commits its part next to the others
    lake.write(ASSET, DAY, frame("p2", 90), "p2")
    assert lake.part_names(ASSET, DAY) == ["p0", "p1", "p2"]
    assert lake.day_rows(ASSET, DAY) == 310


def _acknowledging_writer(root: str, acks: str) -> None:
    """Commits part after part of a day, noting each part once its write has returned."""
    lake = Lake(root)
    for k in range(1_000):
        lake.write(ASSET, DAY, frame(f"k{k}", 2_000), f"k{k}")
        with open(acks, "a") as handle:
            handle.write(f"k{k}\n")
            handle.flush()
            os.fsync(handle.fileno())


def test_a_writer_killed_mid_write_loses_no_acknowledged_commit(
    s3_lake: str, tmp_path: Path
) -> None:
    acks = tmp_path / "acks"
    acks.touch()
    writer = _spawn.Process(target=_acknowledging_writer, args=(s3_lake, str(acks)))
    writer.start()
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while len(acks.read_text().split()) < 3:
        assert writer.is_alive() and time.monotonic() < deadline, "the writer never wrote 3 parts"
        time.sleep(0.05)
    time.sleep(0.15)  # somewhere inside the next write: files written, commit, or between
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(CHILD_TIMEOUT_S)

    lake = Lake(s3_lake)
    acknowledged = acks.read_text().split()
    parts = lake.read_parts(ASSET, DAY)
    # every acknowledged part is there, whole; at most the one in flight committed unacknowledged
    assert set(acknowledged) <= parts.keys()
    assert len(parts.keys() - set(acknowledged)) <= 1
    for name, data in parts.items():
        assert_frame_equal(data, frame(name, 2_000))
    assert lake.version(ASSET) == len(parts) - 1
    lake.vacuum(ASSET, retention_hours=0)
    assert lake.read_parts(ASSET, DAY).keys() == parts.keys()
    assert lake.day_rows(ASSET, DAY) == 2_000 * len(parts)


# day leases on S3 ---------------------------------------------------------------------------------
def _exclusive_creator(root: str, names: list[str], who: int, start: Any, won: Any) -> None:
    path = lake_path(root) / "_race"
    start.wait(CHILD_TIMEOUT_S)
    mine = []
    for name in names:
        try:
            create_exclusive(path / name, f"{who}".encode())
            mine.append(name)
        except FileExistsError:
            pass
    won.put((who, mine))


def _second_owner(root: str, said: Any) -> None:
    locks = DayLocks(root, "run-b", ttl_seconds=30, poll_seconds=0.1, log=said.put)
    locks.acquire([DAY], wait_seconds=CHILD_TIMEOUT_S)
    said.put(f"took {DAY}")
    locks.close()


def test_day_locks_on_s3_one_owner_at_a_time(s3_lake: str, s3_server: S3Server) -> None:
    # an exclusive create is one conditional PUT: moto refuses the second with 412
    target = lake_path(s3_lake) / "_race" / "once.json"
    create_exclusive(target, b"first")
    with pytest.raises(FileExistsError):
        create_exclusive(target, b"second")
    assert target.read_bytes() == b"first"

    # processes racing to create the same names: exactly one wins each
    names = [f"n{i:03d}" for i in range(30)]
    start, won = _spawn.Event(), _spawn.Queue()
    racers = [
        _spawn.Process(target=_exclusive_creator, args=(s3_lake, names, w, start, won))
        for w in range(3)
    ]
    for process in racers:
        process.start()
    time.sleep(0.5)
    start.set()
    results = dict(won.get(timeout=CHILD_TIMEOUT_S) for _ in racers)
    for process in racers:
        join(process)
    winners = [name for mine in results.values() for name in mine]
    assert sorted(winners) == names  # each name won once, by one process
    for who, mine in results.items():
        for name in mine:
            assert (lake_path(s3_lake) / "_race" / name).read_bytes() == f"{who}".encode()

    # a day held by one owner: another process waits, then takes it once it is released
    first = DayLocks(s3_lake, "run-a", ttl_seconds=30)
    first.acquire([DAY])
    said = _spawn.Queue()
    second = _spawn.Process(target=_second_owner, args=(s3_lake, said), name="run-b")
    second.start()
    message = said.get(timeout=CHILD_TIMEOUT_S)
    assert message.startswith(f"waiting for the lake lock of day {DAY}: run run-a holds it")
    lease = first.current(DAY)
    assert lease is not None and (lease.owner, lease.generation) == ("run-a", 1)
    first.release([DAY])
    took = said.get(timeout=CHILD_TIMEOUT_S)
    assert took.startswith(f"took the lake lock of day {DAY} after waiting"), took
    assert took.endswith("for run run-a (released)"), took
    assert said.get(timeout=CHILD_TIMEOUT_S) == f"took {DAY}"
    join(second)
    lease = first.current(DAY)
    assert lease is not None and (lease.owner, lease.generation) == ("run-b", 3)
    with pytest.raises(LeaseLost):
        first.held[DAY] = 1
        first.hold(DAY)
    first.close()
    keys = bucket_keys(s3_server, s3_lake)
    assert any(k.endswith(f"_locks/{DAY}/000000000003.json") for k in keys)


# the IO manager on S3 -----------------------------------------------------------------------------
def test_io_manager_materialises_a_stage_asset_on_the_s3_lake(s3_lake: str) -> None:
    import dagster as dg  # here, so the writer processes above need not import it

    from nlp_assets.partitions import daily_partitions
    from nlp_assets.resources.lake import LakeIOManager, LakeResource

    @dg.asset(partitions_def=daily_partitions)
    def tiny_stage(context) -> pl.DataFrame:  # type: ignore[no-untyped-def]
        return frame(context.partition_key, 12)

    @dg.asset(partitions_def=daily_partitions)
    def tiny_counts(tiny_stage: pl.DataFrame) -> pl.DataFrame:
        return tiny_stage.group_by((pl.col("n") % 3).alias("bucket")).len().sort("bucket")

    resources = {"io_manager": LakeIOManager(lake=LakeResource(root=s3_lake))}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [tiny_stage, tiny_counts],
            partition_key=DAY,
            resources=resources,
            instance=instance,
        )
        assert result.success
        events = instance.all_logs(result.run_id)
        run_id = result.run_id
    materialised = {
        e.asset_key.to_user_string(): e.metadata
        for e in result.asset_materializations_for_node("tiny_stage")
    }
    assert materialised["tiny_stage"]["dagster/partition_row_count"].value == 12
    assert materialised["tiny_stage"]["path"].value == f"{s3_lake}/tiny_stage"

    lake = Lake(s3_lake)
    assert_frame_equal(lake.read_day("tiny_stage", DAY), frame(DAY, 12))
    counts = lake.read_day("tiny_counts", DAY)
    assert counts["len"].to_list() == [4, 4, 4]
    # the run took the day's lease on S3 and held it for its writes
    lease = DayLocks(s3_lake, "reader").current(DAY)
    assert lease is not None and lease.owner == run_id
    # no credential reached the run's event log
    assert not [e for e in events if SECRET_KEY in str(e)]


# configuration from the environment only ----------------------------------------------------------
def test_the_s3_lake_is_configured_by_the_aws_variables_alone(
    s3_lake: str, s3_server: S3Server
) -> None:
    options = settings.lake_filesystem_options(s3_lake)
    assert options == {
        "use_listings_cache": False,
        "endpoint_url": s3_server.endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
    }
    assert SECRET_KEY not in repr(options)  # credentials stay with botocore and delta-rs
    assert settings.lake_filesystem_options("/tmp/lake") == {}
    assert Lake(s3_lake).root.storage_options == options
    assert DayLocks(s3_lake, "run-a").root.storage_options == options


# delta-rs's commit is a conditional PUT -----------------------------------------------------------
def test_a_commit_of_a_version_that_exists_is_refused_by_the_server(s3_lake: str) -> None:
    """delta-rs writes log entry N with If-None-Match: *; moto answers 412 when N exists, so a
    writer that read the table before another's commit can never overwrite that commit."""
    lake = Lake(s3_lake)
    lake.write(ASSET, DAY, frame("a", 10), "pa")
    stale = lake.table(ASSET)  # version 0, read before the other writer commits version 1
    assert stale is not None and stale.version() == 0
    lake.write(ASSET, DAY, frame("b", 20), "pb")
    late = frame("c", 30).with_columns(
        ingest_date=pl.lit(date.fromisoformat(DAY)), part=pl.lit("pc")
    )
    with pytest.raises(CommitFailedError):
        write_deltalake(
            stale,
            late.to_arrow(),
            mode="append",
            commit_properties=CommitProperties(max_commit_retries=0),
        )
    assert lake.version(ASSET) == 1
    assert lake.part_names(ASSET, DAY) == ["pa", "pb"]  # version 1 is the other writer's
    # with retries (the default), delta-rs checks the newer commits for conflicts and commits
    # on top of them: version 2
    write_deltalake(stale, late.to_arrow(), mode="append")
    assert lake.version(ASSET) == 2
    assert lake.day_rows(ASSET, DAY) == 60
