"""The committed lake fixture (`fixtures/lake_v1`, described in `dev/lake_fixture.py`): what the
reader of its layout (the migration's `OldLake`) returns for it, and that it holds what a naive
reader of its files would get wrong (the rows a migration must not carry). Its migration to
Delta: `test_lake_migrate.py`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from dev import lake_fixture
from nlp_assets.lake.migrate import INDEX_DIR, MANIFEST_DIR, PARTS_DIR, OldLake

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COMMITTED = FIXTURES / "lake_v1"
EXPECTED = FIXTURES / "lake_v1.expected.json"
#: (table, day) holding the file of a writer killed before it published: read by a naive reader.
UNPUBLISHED = {
    ("raw_text", lake_fixture.KAFKA_DAY),
    ("predictions", lake_fixture.WHOLE_DAY),
}
_NAMED_AFTER_TIME = (
    re.compile(r"\d{13}-[0-9a-f]{12}"),  # the writer's tokens (`_parts/<token>/`, `.tmp-<token>`)
    re.compile(r"(?<=\.)[0-9a-f]{32}(?=\.tmp$)"),  # the pre-manifest writer's temp files
)


def expected() -> dict:
    return json.loads(EXPECTED.read_text())


@pytest.fixture
def fixture_lake(tmp_path: Path) -> Path:
    """A copy of the committed fixture (nothing a test does can change the committed one)."""
    return Path(shutil.copytree(COMMITTED, tmp_path / "lake_v1"))


def layout(root: Path) -> list[str]:
    """Every file of a lake, relative, with the names its writer takes from the clock masked."""
    names = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        for pattern in _NAMED_AFTER_TIME:
            name = pattern.sub("<token>", name)
        names.append(name)
    return sorted(names)


def test_the_old_layout_reader_returns_the_expectations(fixture_lake: Path):
    assert lake_fixture.expectations(fixture_lake) == expected()
    assert lake_fixture.main([str(COMMITTED), "--check"]) == 0


def test_the_fixture_covers_every_layout_the_migration_must_carry():
    tables = expected()["tables"]
    stages = (*lake_fixture.PART_STAGES, *lake_fixture.DAY_STAGES)
    for stage in stages:
        days = tables[stage]["days"]
        assert sorted(days) == sorted(lake_fixture.DAYS), stage
        if stage != "raw_text":  # no manifest (raw_text: see below)
            assert days[lake_fixture.PRE_MANIFEST_DAY]["generation"] == 0, stage
        assert days[lake_fixture.WHOLE_DAY]["parts"] == ["day"], stage
    for stage in lake_fixture.PART_STAGES:  # micro-batches, a retry among them
        kafka = tables[stage]["days"][lake_fixture.KAFKA_DAY]
        assert len(kafka["parts"]) == 3 and all(p.startswith("kafka-") for p in kafka["parts"])
        assert kafka["generation"] > len(kafka["parts"]), stage
    # a pre-manifest day that today's writer added a part to: old files listed by generation 1
    raw_old = tables["raw_text"]["days"][lake_fixture.PRE_MANIFEST_DAY]
    assert raw_old["generation"] == 1 and len(raw_old["parts"]) == 3
    assert {"quarantine/raw_text", "quarantine/kafka", "quarantine/cleaned_text"} <= set(tables)
    for table in ("quarantine/raw_text", "quarantine/kafka"):
        assert all(sum(d["reasons"].values()) == d["rows"] for d in tables[table]["days"].values())
        assert any(d["rows"] for d in tables[table]["days"].values())
    assert tables["quarantine/kafka"]["days"][lake_fixture.PRE_MANIFEST_DAY]["rows"] == 0
    assert tables["sentiment_model"]["rows"] == 2  # unpartitioned: `data.parquet`
    files = layout(COMMITTED)
    assert f"raw_text/{lake_fixture.KAFKA_DAY}/{INDEX_DIR}/doc_id.parquet" in files
    assert f"raw_text/{lake_fixture.KAFKA_DAY}/{MANIFEST_DIR}/.tmp-<token>" in files
    assert any(f.startswith("_locks/") for f in files)
    assert (COMMITTED / "sentiment_model" / "data.parquet").is_file()


def test_a_naive_reader_of_every_file_reads_rows_the_lake_does_not_hold(fixture_lake: Path):
    """What the migration fixes: listing a day's Parquet files reads a killed writer's file
    (and a pre-manifest writer's temp file is one `.tmp` glob away)."""
    lake = OldLake(str(fixture_lake))
    tables = expected()["tables"]
    more: set[tuple[str, str]] = set()
    for table, entry in tables.items():
        for day, want in entry.get("days", {}).items():
            folder = fixture_lake / table / day
            files = [p for p in folder.rglob("*.parquet") if INDEX_DIR not in p.parts]
            naive = pl.concat([pl.read_parquet(p) for p in files], how="vertical_relaxed")
            assert lake.read_day(table, day).height == want["rows"]
            assert naive.height >= want["rows"], (table, day)
            if naive.height > want["rows"]:
                more.add((table, day))
                if "doc_ids" in want:  # the same documents twice
                    assert set(naive["doc_id"]) == set(want["doc_ids"])
                    assert naive["doc_id"].is_duplicated().any()
    assert more == UNPUBLISHED
    # superseded generations: older manifests, and the files they list are gone
    day = fixture_lake / "raw_text" / lake_fixture.KAFKA_DAY
    manifests = sorted((day / MANIFEST_DIR).glob("*.json"))
    assert len(manifests) == tables["raw_text"]["days"][lake_fixture.KAFKA_DAY]["generation"]
    listed = {f for m in manifests for f in json.loads(m.read_text())["parts"].values()}
    newest = set(json.loads(manifests[-1].read_text())["parts"].values())
    on_disk = {p.relative_to(day).as_posix() for p in (day / PARTS_DIR).rglob("*.parquet")}
    assert newest < on_disk  # plus the killed writer's file
    assert listed - on_disk  # the retried part's first file, collected at the switch
