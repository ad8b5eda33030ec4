"""The lake fixture of the Delta migration: a small lake in the manifest layout (before issue 22),
written by that layout's own writer, and what that layout's reader returns for it.

`nlp_assets_tests/fixtures/lake_v1/` was written by this module's generator at commit 131abc0
(merged in 93ac12f), with what the reader of the time returned for it in
`lake_v1.expected.json`. The manifest writer is gone (`nlp_assets.lake` is Delta now), and its
generator with it: to write the fixture again, check that commit out and run
``python -m dev.lake_fixture --out nlp_assets_tests/fixtures/lake_v1 --replace`` there. What is
left here describes it, and recomputes the expectations through the migration's reader of the
old layout (`nlp_assets.lake.migrate.OldLake`); `nlp_assets_tests/unit/test_lake_fixture.py`
pins both, `test_lake_migrate.py` checks the migrated lake against them.

Contents are synthetic (no model runs) and fixed: the same doc ids, rows and part names every
time. What the writer named after the clock (the `_parts/<token>/` folders, the manifests'
`published_at` and `writer`, the day leases) is nothing compared. Three days, each a layout the
old lake held:

- `PRE_MANIFEST_DAY`: every asset as the writer before manifests left it (`<day>/<part>.parquet`;
  a killed writer's hidden temp file `.<part>.<hex>.tmp` in cleaned_text). raw_text, and the
  quarantines of its Kafka run, then got one micro-batch from the manifest writer: generation 1
  lists the old files beside the new one.
- `WHOLE_DAY`: the part `day` for every stage. raw_text first had two Kafka micro-batches that a
  whole-day backfill replaced; `quarantine/kafka` keeps those micro-batches' parts (the backfill
  does not write it). predictions: a first attempt killed before it published (its file stays,
  unreferenced), then the retry.
- `KAFKA_DAY`: three micro-batches (`OffsetRange.part` names) for the part-scope stages, in the
  order a Kafka run writes them (dead letters, the day index of doc ids `_index/`, quarantine,
  data). The second range ran twice (every stage has a superseded generation); the third's
  first attempt of raw_text was killed while publishing (an unreferenced file and a `.tmp-`
  manifest stay) and held a re-sent message, quarantined as a duplicate. The day-scope stages
  (aggregates, quality, reports) are whole days on every day: here refreshed twice.

Plus the unpartitioned `sentiment_model` (`data.parquet`) and the day leases (`_locks/`). Some
parts have no rows (quarantines of micro-batches that refused nothing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from nlp_assets.lake import QUARANTINE
from nlp_assets.lake.migrate import OldLake

PRE_MANIFEST_DAY = "2026-11-16"
WHOLE_DAY = "2026-11-17"
KAFKA_DAY = "2026-11-18"
DAYS = (PRE_MANIFEST_DAY, WHOLE_DAY, KAFKA_DAY)
#: The stages the pipeline stores per part (a micro-batch writes its own part) and per day.
PART_STAGES = ("raw_text", "cleaned_text", "tokens", "features", "predictions")
DAY_STAGES = ("aggregates", "quality", "reports")


# what the old layout's reader returns --------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"cannot digest {type(value).__name__}")


def digest(frame: pl.DataFrame) -> str:
    """A content hash of a frame's rows that ignores row and column order: the sha256 of its
    rows as sorted JSON lines (bytes as hex, dates and times in ISO form). The same rows read
    from another table format give the same digest when their values are the same."""
    lines = sorted(
        json.dumps(row, sort_keys=True, default=_jsonable, ensure_ascii=False)
        for row in frame.iter_rows(named=True)
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def expectations(root: str | Path) -> dict[str, Any]:
    """What the old layout's reader returns for every table and day of the lake at `root`: per
    day its generation, part names, rows, digest and sorted doc ids (quarantine: reasons with
    counts instead); per table its columns."""
    lake = OldLake(str(root))
    found: dict[str, Any] = {}
    for table in lake.tables():  # `_locks` is not one; `_index`, `_parts` are not days
        if lake.is_unpartitioned(table):
            frame = lake.read_part(table, None)
            found[table] = {
                "columns": _columns(frame),
                "rows": frame.height,
                "digest": digest(frame),
            }
            continue
        days: dict[str, Any] = {}
        columns: dict[str, str] = {}
        for day in lake.days(table):
            version = lake.version(table, day)
            frame = lake.read_day(table, day)
            columns = columns or _columns(frame)
            if _columns(frame) != columns:
                raise ValueError(f"{table} {day}: columns {_columns(frame)}, not {columns}")
            entry: dict[str, Any] = {
                "generation": version.generation,
                "parts": lake.part_names(table, day),
                "rows": frame.height,
                "digest": digest(frame),
            }
            if table.startswith(f"{QUARANTINE}/"):
                counts = frame.group_by("reason").len().sort("reason")
                entry["reasons"] = dict(counts.iter_rows())
            elif "doc_id" in frame.columns:
                entry["doc_ids"] = sorted(frame["doc_id"])
            days[day] = entry
        found[table] = {"columns": columns, "days": days}
    return {"days": list(DAYS), "tables": found}


def _columns(frame: pl.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in frame.schema.items()}


def expected_path(out: Path) -> Path:
    return out.with_name(f"{out.name}.expected.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lake", type=Path, help="a lake of the old layout (the fixture)")
    parser.add_argument(
        "--check", action="store_true", help="compare with its .expected.json (exit 1 if not)"
    )
    args = parser.parse_args(argv)
    found = json.dumps(expectations(args.lake), indent=1, sort_keys=True) + "\n"
    if not args.check:
        sys.stdout.write(found)
        return 0
    same = found == expected_path(args.lake).read_text()
    print(f"{args.lake}: {'as expected' if same else 'NOT as expected'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
