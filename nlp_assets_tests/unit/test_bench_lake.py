"""`bench.lake` at tiny sizes, so it cannot rot: every section runs on both lakes and the readers
agree (the benchmark checks the rows itself); and the retired manifest lake it keeps as its
baseline stays out of the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import lake as bench_lake

ROOT = Path(__file__).resolve().parents[2]


def test_bench_lake_runs_every_section_on_both_lakes_at_tiny_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = bench_lake.main(
        [
            *("--rows", "12", "--dim", "4", "--repeat", "2"),
            *("--parts", "0,2", "--read-parts", "1,3", "--days", "2", "--day-parts", "2"),
            *("--batches", "1,3", "--dir", str(tmp_path)),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "load average" in out
    for line in (
        "predictions: commit 12 rows, day holds 2 parts",
        "features: commit 12 rows, day holds 0 parts",
        "read a day of 3 parts (36 rows, 3 files)",
        "read a day of 3 parts, compacted (36 rows, 1 files)",
        "read 2 days x 2 parts (48 rows, 4 files)",
        "read 2 days x 2 parts, compacted (48 rows, 2 files)",
        "micro-batch 3-4 of a day, per message",
        "growth: micro-batch 3 over 1",
    ):
        assert line in out
    # the streamed day holds the part of each of its 4 micro-batches (1-2 and 3-4), 12 rows each
    raw = bench_lake.Lake(str(tmp_path / "delta")).read_day("raw_text", bench_lake.day_of(400))
    assert raw.height == 4 * 12
    assert raw["doc_id"].n_unique() == raw.height


def test_the_package_never_imports_the_retired_manifest_lake() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("nlp_assets", "resources")
        for path in (ROOT / folder).rglob("*.py")
        if "manifest_lake" in path.read_text()
    ]
    assert offenders == []
