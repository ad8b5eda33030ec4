"""CPU per `GET /v1/documents/{id}` status lookup without a database, at a given number of
submitted documents: the accepted index (SQLite, one probe) beside what the API did before
issue 23 (re-read and re-hash every API landing line of the last week), in the same run.

    python -m bench.api_lookup --docs 20000 1000000 --lookups 2000
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[20_000, 1_000_000])
    parser.add_argument("--lookups", type=int, default=2_000)
    parser.add_argument("--scan-lookups", type=int, default=5, help="0: skip the old scan")
    args = parser.parse_args()
    for docs in args.docs:
        figures = bench(docs, args.lookups, args.scan_lookups)
        scan = figures.get("scan_cpu_ms")
        print(
            f"{docs:>9,} submitted: index {figures['index_cpu_ms']:.3f} ms CPU per lookup"
            + (f"; re-reading landing parts (before): {scan:,.1f} ms" if scan else "")
        )


if __name__ == "__main__":
    main()
