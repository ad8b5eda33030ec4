"""How many concurrent writers one Delta table takes before commits queue.

N writer processes (1, 2, 4, 8, 16), started together, each commit `--commits` micro-batch
parts of `--rows` rows to one table through `nlp_assets.lake.Lake.write` (one commit per
part: an overwrite with the predicate ``ingest_date = d AND part = p``), either all to one
day or each to its own day. The table exists before the writers start (no creation race).

Reported per case: total commits per second (commits / wall time from the first start to the
last commit), p50 and p95 of one commit's latency (the `Lake.write` call, seen by its writer),
and the retries: those delta-rs makes itself (a commit whose version another writer took,
re-checked for conflicts and committed at the next version: `num_retries` in each commit's
`operationMetrics` in the log) and those `Lake._commit` makes after delta-rs gives up with a
`CommitFailedError` (a real conflict; counted from its "commit conflict" log line). Commits
queue once total commits/s stops growing with N while the latency grows with it.

The figures depend on the CPUs: on the 2-core development machine, shared, 8 and 16 writers
are as much CPU-bound as commit-bound (the load average is printed with them).

Run:
    python -m bench.lake_writers                  # 1, 2, 4, 8, 16 writers, one day and many
    python -m bench.lake_writers --writers 1 4 --commits 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ASSET = "predictions"
DAY = "2026-03-01"


def worker(root: str, day: str, name: str, commits: int, rows: int) -> None:
    """One writer: waits for "go" on stdin, then commits its parts; one JSON line out."""
    import polars as pl

    from nlp_assets.lake import Lake

    conflicts = 0

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal conflicts
            if "commit conflict" in record.getMessage():
                conflicts += 1

    logger = logging.getLogger("nlp_assets.lake")
    logger.setLevel(logging.INFO)
    logger.addHandler(Count())
    lake = Lake(root)
    frames = [
        pl.DataFrame(
            {
                "doc_id": [f"{name}-{k}-{i:05d}" for i in range(rows)],
                "label": ["positive", "negative", "neutral"] * (rows // 3) + ["x"] * (rows % 3),
                "score": [i / rows for i in range(rows)],
            }
        )
        for k in range(commits)
    ]
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    latencies = []
    for k, frame in enumerate(frames):
        t0 = time.perf_counter()
        lake.write(ASSET, day, frame, f"{name}-{k:03d}")
        latencies.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "started": started,
                "ended": time.time(),
                "latencies": latencies,
                "lake_retries": conflicts,
            }
        ),
        flush=True,
    )


def run_case(writers: int, same_day: bool, commits: int, rows: int) -> dict:
    import polars as pl

    from nlp_assets.lake import Lake

    root = tempfile.mkdtemp(prefix="lake-writers-")
    lake = Lake(root)
    lake.write(ASSET, DAY, pl.DataFrame({"doc_id": ["seed"], "label": ["x"], "score": [0.0]}))
    first = lake.version(ASSET)
    assert first is not None
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    processes = []
    for w in range(writers):
        day = DAY if same_day else f"2026-04-{w + 1:02d}"
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.lake_writers",
                    "--worker",
                    root,
                    day,
                    f"w{w}",
                    str(commits),
                    str(rows),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=1800)
        assert process.returncode == 0, f"a writer failed ({process.returncode})"
        results.append(json.loads(out.strip().splitlines()[-1]))
    table = lake.table(ASSET)
    assert table is not None
    history = [h for h in table.history() if h["version"] > first]
    delta_retries = sum(int(h.get("operationMetrics", {}).get("num_retries", 0)) for h in history)
    latencies = sorted(x for r in results for x in r["latencies"])
    total = writers * commits
    # nothing lost: every part there, whole
    rows_by_day = lake.rows_by_day(ASSET)
    assert sum(rows_by_day.values()) == total * rows + 1, rows_by_day
    assert len(history) == total, (len(history), total)
    wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
    return {
        "writers": writers,
        "days": "one day" if same_day else "own days",
        "commits": total,
        "commits_per_s": total / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p95_ms": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "delta_retries": delta_retries,
        "lake_retries": sum(r["lake_retries"] for r in results),
        "load": os.getloadavg()[0],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        root, day, name, commits, rows = sys.argv[2:7]
        worker(root, day, name, int(commits), int(rows))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, {args.commits} commits of {args.rows} rows per writer")
    header = (
        "| writers | days | commits | commits/s | p50 ms | p95 ms | delta-rs retries "
        "| Lake retries | load |"
    )
    print(header)
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for same_day in (True, False):
        for writers in args.writers:
            r = run_case(writers, same_day, args.commits, args.rows)
            print(
                f"| {r['writers']} | {r['days']} | {r['commits']} | {r['commits_per_s']:.1f} | "
                f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['delta_retries']} | "
                f"{r['lake_retries']} | {r['load']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
