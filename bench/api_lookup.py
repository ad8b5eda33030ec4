"""CPU per `GET /v1/documents/{id}` status lookup without a database, at a given number of
submitted documents: the accepted index (SQLite, one probe) beside what the API did before
issue 23 (re-read and re-hash every API landing line of the last week), in the same run.

    python -m bench.api_lookup --docs 20000 1000000 --lookups 2000

`--processed`: the `processed` status instead, the documents spread over the last 7 days of a
synthetic lake (written by `Lake.write`, parts of `--part-size` documents in `raw_text` and
`predictions` as Kafka micro-batches write them, one Delta commit per part): the lookup as it
is now (the accepted index names the day, one filtered scan of that day that skips the files
whose doc_id statistics rule the document out) beside the lake read before (every day of the
week, newest first, whole).

    python -m bench.api_lookup --processed --docs 20000 1000000 --lookups 200
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nlp_assets.api.accepted import IndexedAccepted
from nlp_assets.api.submit import namespace
from nlp_assets.kafka.messages import landing_jsonl
from nlp_assets.kernels.ingest import doc_id_for, normalise_record

PART = 500  # documents per landing part (one request's batch)


def _scan(folder: Path, doc_id: str) -> bool:
    """The lookup before issue 23: every line of every part, normalised and hashed."""
    for part in sorted(folder.glob("*.jsonl"), reverse=True):
        with part.open("rb") as handle:
            for line in handle:
                row = normalise_record(json.loads(line), default_source="api")
                if doc_id_for(row["source"], row["source_id"], row["text"]) == doc_id:
                    return True
    return False


def bench(docs: int, lookups: int, scan_lookups: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-lookup-"))
    index = IndexedAccepted(root / "accepted.sqlite", days=7)
    folder = root / "landing" / datetime.now(UTC).date().isoformat() / "api"
    folder.mkdir(parents=True)
    ids = []
    for start in range(0, docs, PART):
        records = [
            {"id": f"d{i}", "text": f"Bench document {i}: fine.", "source": namespace("api")}
            for i in range(start, min(start + PART, docs))
        ]
        batch = [doc_id_for(r["source"], r["id"], r["text"]) for r in records]
        name = f"{start:012d}.jsonl"
        index.record(batch, f"landing:{folder.parent.name}/api/{name}")
        if docs <= 100_000 or scan_lookups:
            (folder / name).write_bytes(landing_jsonl(records))
        ids += batch
    rng = random.Random(0)
    wanted = [rng.choice(ids) for _ in range(lookups)]
    started = time.process_time()
    assert all(index.lookup(doc_id) for doc_id in wanted)
    indexed = (time.process_time() - started) / lookups
    figures = {"docs": docs, "index_cpu_ms": indexed * 1000}
    if scan_lookups:
        started = time.process_time()
        for doc_id in wanted[:scan_lookups]:
            assert _scan(folder, doc_id)
        figures["scan_cpu_ms"] = (time.process_time() - started) / scan_lookups * 1000
    return figures


def _processed_lake(root: Path, docs: int, part_size: int) -> tuple[IndexedAccepted, list[str]]:
    """`docs` predictions over the last 7 days, in parts of `part_size`, each accepted."""
    import polars as pl

    from nlp_assets.api.results import RAW_ASSET
    from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
    from nlp_assets.lake import Lake

    lake = Lake(root / "lake")
    index = IndexedAccepted(root / "accepted.sqlite", days=7)
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=back) for back in range(7)]
    ids: list[str] = []
    for number, start in enumerate(range(0, docs, part_size)):
        day = days[number % len(days)]
        batch = [f"{i:016x}" for i in range(start, min(start + part_size, docs))]
        values = {
            "doc_id": batch,
            "ingest_date": day,
            "source": "api",
            "lang": "en",
            "is_duplicate": False,
            "sentiment_label": "positive",
            "sentiment_score": 0.9,
            "sentiment_model": "bench",
            "entities": [],
        }
        frame = pl.DataFrame(
            {
                c: values.get(c) if c == "doc_id" else [values.get(c)] * len(batch)
                for c in PREDICTIONS_SCHEMA
            },
            schema=PREDICTIONS_SCHEMA,
        )
        part = f"nlp-documents-0-{start}-{start + len(batch)}"
        lake.write(RAW_ASSET, day.isoformat(), frame.select("doc_id", "ingest_date"), part)
        lake.write("predictions", day.isoformat(), frame, part)
        index.record(batch, f"landing:{day.isoformat()}/api/{part}.jsonl")
        ids += batch
    return index, ids


def bench_processed(docs: int, lookups: int, before_lookups: int, part_size: int) -> dict:
    import polars as pl

    from nlp_assets import read
    from nlp_assets.api.config import ApiSettings
    from nlp_assets.api.results import Results
    from nlp_assets.api.routers.documents import ingest_days

    root = Path(tempfile.mkdtemp(prefix="bench-lookup-processed-"))
    started = time.perf_counter()
    index, ids = _processed_lake(root, docs, part_size)
    built = time.perf_counter() - started
    results = Results(ApiSettings(lake_dir=str(root / "lake"), keys_file=str(root / "k.json")))
    rng = random.Random(0)
    wanted = [rng.choice(ids) for _ in range(lookups)]
    started = time.process_time()
    for doc_id in wanted:
        accepted = index.lookup(doc_id)
        assert accepted is not None and results.prediction(doc_id, ingest_days(accepted))
    figures = {
        "docs": docs,
        "build_s": built,
        "parts_per_day": docs / part_size / 7,
        "now_cpu_ms": (time.process_time() - started) / lookups * 1000,
    }
    if before_lookups:  # the lake read before: each day of the week, newest first, whole
        started = time.process_time()
        for doc_id in wanted[:before_lookups]:
            for day in results.recent_days():
                frame = read.read_predictions(day, lake=results.lake)
                if frame.filter(pl.col("doc_id") == doc_id).height:
                    break
            else:
                raise AssertionError(doc_id)
        figures["before_cpu_ms"] = (time.process_time() - started) / before_lookups * 1000
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[20_000, 1_000_000])
    parser.add_argument("--lookups", type=int, default=2_000)
    parser.add_argument("--scan-lookups", type=int, default=5, help="0: skip the old scan")
    parser.add_argument("--processed", action="store_true", help="the processed status")
    parser.add_argument("--part-size", type=int, default=5_000, help="documents per lake part")
    args = parser.parse_args()
    if args.processed:
        for docs in args.docs:
            figures = bench_processed(docs, args.lookups, args.scan_lookups, args.part_size)
            before = figures.get("before_cpu_ms")
            print(
                f"{docs:>9,} submitted ({figures['parts_per_day']:.1f} parts a day, lake built "
                f"in {figures['build_s']:.0f} s): processed lookup {figures['now_cpu_ms']:.2f} ms "
                "CPU"
                + (f"; reading the week's predictions (before): {before:,.1f} ms" if before else "")
            )
        return
    for docs in args.docs:
        figures = bench(docs, args.lookups, args.scan_lookups)
        scan = figures.get("scan_cpu_ms")
        print(
            f"{docs:>9,} submitted: index {figures['index_cpu_ms']:.3f} ms CPU per lookup"
            + (f"; re-reading landing parts (before): {scan:,.1f} ms" if scan else "")
        )


if __name__ == "__main__":
    main()
