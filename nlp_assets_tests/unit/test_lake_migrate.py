"""`nlp lake migrate` (`nlp_assets.lake.migrate`) on a copy of the committed fixture
(`fixtures/lake_v1`, a lake of the manifest layout written by that layout's writer): the Delta
tables read what the old reader read (`lake_v1.expected.json`), per day and per part, with the
same types; a rerun changes nothing; a copy killed after any commit, or inside one, resumes; a
lake of the new layout is not touched; debris of killed writers is not data."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dev import lake_fixture
from nlp_assets.client import cli
from nlp_assets.lake import Lake, WriteResult
from nlp_assets.lake.migrate import (
    APP_ID,
    CONFLICT,
    COPIED,
    DONE,
    MISMATCH,
    PART_SLOTS,
    RECORD_DIR,
    WOULD_COPY,
    OldLake,
    main,
    migrate,
)
from nlp_assets.read import read_asset

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "nlp_assets_tests" / "fixtures"
COMMITTED = FIXTURES / "lake_v1"
TABLES: dict = json.loads((FIXTURES / "lake_v1.expected.json").read_text())["tables"]
#: One commit per old part (an unpartitioned table: one).
COMMITS = sum(len(d["parts"]) for t in TABLES.values() for d in t.get("days", {}).values()) + sum(
    1 for t in TABLES.values() if "days" not in t
)


@pytest.fixture
def old_lake(tmp_path: Path) -> Path:
    """A copy of the committed fixture (nothing a test does can change the committed one)."""
    return Path(shutil.copytree(COMMITTED, tmp_path / "lake"))


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under `root`: its modification time and content hash."""
    return {
        p.relative_to(root).as_posix(): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def versions(root: Path) -> dict[str, int | None]:
    lake = Lake(str(root))
    return {table: lake.version(table) for table in lake.tables()}


def check_migrated(root: Path) -> None:
    """The Delta tables read exactly what the old reader read (the expectations): every day's
    rows, columns with their polars types, digest, doc ids (or quarantine reasons), its parts,
    the rows in the log's statistics, and the app transaction of the generation copied."""
    lake = Lake(str(root))
    assert lake.tables() == sorted(TABLES)
    for table, want in TABLES.items():
        if "days" not in want:
            frame = lake.read_part(table, None)
            assert lake_fixture._columns(frame) == want["columns"], table
            assert (frame.height, lake_fixture.digest(frame)) == (want["rows"], want["digest"])
            continue
        for day, entry in want["days"].items():
            frame = lake.read_day(table, day)
            where = f"{table} {day}"
            assert frame.height == entry["rows"], where
            if frame.height:
                assert lake_fixture._columns(frame) == want["columns"], where
            assert lake_fixture.digest(frame) == entry["digest"], where
            if "doc_ids" in entry:
                assert sorted(frame["doc_id"]) == entry["doc_ids"], where
            if "reasons" in entry:
                counts = frame.group_by("reason").len().sort("reason") if frame.height else None
                assert (dict(counts.iter_rows()) if counts is not None else {}) == entry["reasons"]
            assert set(lake.part_names(table, day)) <= set(entry["parts"]), where
            assert lake.day_rows(table, day) == entry["rows"], where
            done = (entry["generation"] + 1) * PART_SLOTS + len(entry["parts"])
            assert lake.transaction_version(table, f"{APP_ID}:{day}") == done, where


def test_the_migrated_lake_reads_what_the_old_reader_read(old_lake: Path):
    result = migrate(old_lake)
    assert result.ok, result.summary()
    assert result.commits == COMMITS
    assert {d.status for d in result.days} == {COPIED}
    check_migrated(old_lake)
    # the old files are kept by default, and named as what --remove-old would remove; the
    # old layout still reads as it did beside the Delta tables
    assert (old_lake / "raw_text" / lake_fixture.KAFKA_DAY / "_manifest").is_dir()
    assert str(old_lake / "sentiment_model" / "data.parquet") in result.would_remove
    assert lake_fixture.expectations(old_lake)["tables"] == TABLES


def test_a_copy_into_another_root_only_reads_the_old_one(old_lake: Path, tmp_path: Path):
    before = snapshot(old_lake)
    result = migrate(old_lake, tmp_path / "delta", remove_old=False)
    assert result.ok and result.commits == COMMITS
    check_migrated(tmp_path / "delta")
    assert snapshot(old_lake) == before
    assert migrate(old_lake, tmp_path / "delta").commits == 0


def test_every_part_reads_as_it_was_with_its_types(old_lake: Path):
    """Per part: the same rows (digest) and polars dtypes (UInt32 token ids, Array(Float32, 4)
    embeddings, Binary raw bytes, Date, structs); a part without rows has none in Delta."""
    assert migrate(old_lake).ok
    old, lake = OldLake(old_lake), Lake(str(old_lake))
    for table in old.tables():
        for day in old.days(table):
            new_parts = lake.read_parts(table, day)
            for part, frame in old.read_parts(table, day).items():
                if not frame.height:
                    assert part not in new_parts
                    continue
                new = new_parts[part]
                assert new.schema == frame.schema, (table, day, part)
                assert lake_fixture.digest(new) == lake_fixture.digest(frame), (table, day, part)
                if part != "day":
                    assert lake.read_part(table, day, part).equals(new)
            assert set(new_parts) <= set(old.part_names(table, day))
    tokens = lake.read_day("tokens", lake_fixture.KAFKA_DAY)
    assert str(tokens.schema["token_ids"]) == "List(UInt32)"
    features = lake.read_day("features", lake_fixture.KAFKA_DAY)
    assert str(features.schema["embedding"]) == "Array(Float32, shape=(4,))"
    dead = lake.read_quarantine("kafka", lake_fixture.KAFKA_DAY)
    assert b"\xff\xfe not json" in dead["raw"].to_list()


def test_debris_is_not_migrated(old_lake: Path):
    """Unreferenced `_parts` (killed writers), `.tmp` files, `_index` and `_locks` are no data:
    every doc id once, and the log holds exactly the expected rows."""
    locks = {k: v for k, v in snapshot(old_lake).items() if k.startswith("_locks/")}
    assert migrate(old_lake).ok
    lake = Lake(str(old_lake))
    for table, day in (
        ("raw_text", lake_fixture.KAFKA_DAY),  # a killed publisher's file and `.tmp-` manifest
        ("predictions", lake_fixture.WHOLE_DAY),  # a writer killed before it published
        ("cleaned_text", lake_fixture.PRE_MANIFEST_DAY),  # a pre-manifest writer's `.tmp` file
    ):
        ids = lake.read_day(table, day)["doc_id"]
        assert not ids.is_duplicated().any(), (table, day)
        assert lake.day_rows(table, day) == TABLES[table]["days"][day]["rows"]
    assert not any(t.startswith("_") or "/_" in t for t in lake.tables())
    assert {k: v for k, v in snapshot(old_lake).items() if k.startswith("_locks/")} == locks


def test_a_second_run_changes_nothing(old_lake: Path):
    assert migrate(old_lake).ok
    before, tables = snapshot(old_lake), versions(old_lake)
    again = migrate(old_lake)
    assert again.ok and again.commits == 0
    assert {d.status for d in again.days} == {DONE}
    assert versions(old_lake) == tables
    assert snapshot(old_lake) == before


class Killed(BaseException):
    """The migration's process died (not an error it could report)."""


@pytest.mark.parametrize("k", sorted({1, 2, 3, 9, 22, COMMITS // 2, COMMITS - 1, COMMITS}))
def test_a_copy_killed_after_any_commit_resumes(old_lake: Path, k: int):
    """Killed right after its k-th commit (before that day is verified and recorded): the
    next run commits only what is missing, and the lake reads as expected."""
    real = Lake.write
    done = [0]

    def write(self: Lake, *args, **kwargs) -> WriteResult:
        result = real(self, *args, **kwargs)
        if not result.skipped:
            done[0] += 1
            if done[0] == k:
                raise Killed
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Lake, "write", write)
        with pytest.raises(Killed):
            migrate(old_lake)
    resumed = migrate(old_lake)
    assert resumed.ok, resumed.summary()
    assert resumed.commits == COMMITS - k  # nothing committed twice
    check_migrated(old_lake)
    assert migrate(old_lake).commits == 0


_KILL_INSIDE_A_COMMIT = """
import os, signal, sys
from nlp_assets.lake import Lake
from nlp_assets.lake.migrate import migrate

real, calls = Lake.write, [0]

def write(self, asset, day, frame, part="day", **kwargs):
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):  # its data file written, its commit not: SIGKILL
        folder = self.root / asset / (f"ingest_date={day}" if day else "")
        folder.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(str(folder / "part-00000-killed-c000.zstd.parquet"))
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, asset, day, frame, part, **kwargs)

Lake.write = write
migrate(sys.argv[1])
"""


@pytest.mark.parametrize("k", [1, 20])
def test_a_process_killed_inside_a_commit_resumes(old_lake: Path, k: int):
    """SIGKILL of the migrating process between a part's data file and its commit (the k-th
    write): the file is in no version, the rerun writes the part again."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_INSIDE_A_COMMIT, str(old_lake), str(k)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert list(old_lake.rglob("part-00000-killed-c000.zstd.parquet"))
    resumed = migrate(old_lake)
    assert resumed.ok, resumed.summary()
    assert resumed.commits == COMMITS - (k - 1)
    check_migrated(old_lake)
    lake = Lake(str(old_lake))
    live = [f for t in lake.tables() if lake.is_daily(t) for f in lake.files(t, lake_fixture.DAYS)]
    assert not [f for f in live if "killed" in Path(f).name]


def test_a_new_lake_is_not_touched(tmp_path: Path):
    root = tmp_path / "new"
    lake = Lake(str(root))
    day = lake_fixture.KAFKA_DAY
    frame = OldLake(COMMITTED).read_parts("raw_text", day)
    for part, rows in frame.items():
        lake.write("raw_text", day, rows, part)
    lake.write_quarantine("kafka", day, OldLake(COMMITTED).read_day("quarantine/kafka", day))
    lake.write("sentiment_model", None, OldLake(COMMITTED).read_part("sentiment_model", None))
    before, tables = snapshot(root), versions(root)
    for dry_run in (True, False):
        result = migrate(root, dry_run=dry_run, remove_old=True)
        assert result.days == [] and result.ok
        assert not result.removed and not result.would_remove
    assert versions(root) == tables
    assert snapshot(root) == before


def test_remove_old_deletes_only_the_verified_old_layout(old_lake: Path):
    dry = migrate(old_lake, dry_run=True)
    assert {d.status for d in dry.days} == {WOULD_COPY} and dry.commits == 0
    assert not any((old_lake / t).joinpath("_delta_log").exists() for t in TABLES)
    result = migrate(old_lake, remove_old=True)
    assert result.ok and str(old_lake / "raw_text" / lake_fixture.KAFKA_DAY) in result.removed
    for table in TABLES:
        assert not OldLake(old_lake).days(table), table
    assert not (old_lake / "sentiment_model" / "data.parquet").exists()
    assert (old_lake / "_locks" / lake_fixture.KAFKA_DAY).is_dir()  # the leases stay
    check_migrated(old_lake)
    before = snapshot(old_lake)  # now a new lake
    assert migrate(old_lake, remove_old=True).days == []
    assert snapshot(old_lake) == before


def test_a_day_the_new_lake_already_holds_is_a_conflict(old_lake: Path):
    """Rows the pipeline wrote into the Delta table (not the migration) are not overwritten;
    that table's old files are kept; exit 1."""
    day = lake_fixture.WHOLE_DAY
    lake = Lake(str(old_lake))
    newer = OldLake(old_lake).read_day("reports", day).head(1)
    lake.write("reports", day, newer)
    out = io.StringIO()
    assert main(str(old_lake), remove_old=True, out=out) == 1
    assert "CONFLICT" in out.getvalue()
    assert lake.read_day("reports", day).equals(newer)
    assert OldLake(old_lake).days("reports") == list(lake_fixture.DAYS)  # not removed
    statuses = {(d.table, d.day): d.status for d in migrate(old_lake).days}
    assert statuses[("reports", day)] == CONFLICT
    assert statuses[("reports", lake_fixture.KAFKA_DAY)] == DONE


def test_a_copy_that_does_not_read_back_is_a_mismatch(old_lake: Path):
    assert migrate(old_lake).ok
    day = lake_fixture.KAFKA_DAY
    lake = Lake(str(old_lake))
    extra = OldLake(old_lake).read_day("cleaned_text", day).head(2)
    lake.write("cleaned_text", day, extra, "kafka-extra")  # changed after the copy ...
    (old_lake / "cleaned_text" / RECORD_DIR / f"{day}.json").unlink()  # ... and not recorded
    out = io.StringIO()
    assert main(str(old_lake), out=out) == 1
    assert "MISMATCH" in out.getvalue() and "part kafka-extra: 0 rows old, 2 new" in out.getvalue()
    statuses = {(d.table, d.day): d.status for d in migrate(old_lake).days}
    assert statuses[("cleaned_text", day)] == MISMATCH


def test_the_command(old_lake: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setattr("nlp_assets.settings.lake_dir", lambda: str(old_lake))
    before = snapshot(old_lake)
    assert cli.main(["lake", "migrate", "--dry-run"]) == 0
    assert snapshot(old_lake) == before
    days = sum(len(t.get("days", {})) or 1 for t in TABLES.values())
    assert f"{days} table days, 0 commits, {days} to copy" in capsys.readouterr().out
    assert cli.main(["lake", "migrate", "--lake", str(old_lake), "--remove-old"]) == 0
    out = capsys.readouterr().out
    assert "all verified" in out and "removed (" in out
    check_migrated(old_lake)
    assert cli.main(["lake", "migrate"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_the_read_api_gives_the_same_documents(old_lake: Path):
    assert migrate(old_lake, remove_old=True).ok
    for asset in ("cleaned_text", "predictions", "aggregates"):
        frame = read_asset(asset, lake_fixture.DAYS[0], lake_fixture.DAYS[-1], lake=str(old_lake))
        days = TABLES[asset]["days"]
        assert frame.height == sum(d["rows"] for d in days.values())
        if "doc_id" in frame.columns:
            assert sorted(frame["doc_id"]) == sorted(i for d in days.values() for i in d["doc_ids"])
