"""Lake benchmark: the Delta lake against the manifest lake it replaced, and against plain Parquet.

Both lakes run in one process on one local disk, on the same frames: `nlp_assets.lake.Lake` (the
Delta lake) and `bench.manifest_lake.Lake` (the retired manifest lake, kept only as this
baseline). The machine's own figure, measured in the same run, is plain polars on the same
data: `DataFrame.write_parquet` of the frame a commit writes (zstd, statistics, as both lakes
write it), and `pl.read_parquet` of the Delta table's live files for a read (no log, no
manifest). Frames are shaped like the stages' (`predictions`: doc_id hex16, ingest_date,
source, lang, sentiment label and score, a list of entity structs; `features`: a 384-float
embedding as well), 300 rows a micro-batch part. Each figure is the median of `--repeat`
timings, old and new interleaved so they share the machine's noise; the load average is
printed with them.

Measured:

- a micro-batch commit: one new part of 300 rows into a day that already holds 0, 10 and 100
  parts (a Kafka micro-batch's part, with its Delta app transaction);
- reading one day (`read_day`) after 1, 10 and 100 parts, then again once the Delta lake has
  compacted the day (`Lake.compact`; the manifest lake has no compaction: its day is the same);
- reading 30 days of `predictions` (`read_days`), 10 parts a day, before and after compaction;
- the lake's share of the streaming benchmark's cost per message: what a Kafka micro-batch run
  does to the lake (the rest of the day's raw doc ids and cleaned content hashes through
  `read_day_columns`, then a part of raw_text, its quarantine, cleaned_text, tokens, features
  and predictions), at the 1st, 10th and 100th micro-batch of a day, per message.

Run (about five minutes on the 2-core development machine):
    python -m bench.lake
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench import manifest_lake
from nlp_assets.lake import Lake

FIRST_DAY = date(2026, 3, 1)
SOURCES = ("news", "reviews", "feedback", "kafka")
LANGS = ("en", "en", "en", "de", "fr", "es")
LABELS = ("PERSON", "ORG", "GPE", "DATE", "MONEY")
_VOCABULARY = (
    "the a market shares rose fell minister vote film plot music review delivery late good bad "
    "bank profit year city river team match season price store order service staff"
)
WORDS = tuple(_VOCABULARY.split())
#: The tables a Kafka micro-batch writes, in the order it writes them.
MICRO_BATCH_TABLES = (
    "quarantine/raw_text",
    "raw_text",
    "cleaned_text",
    "tokens",
    "features",
    "predictions",
)
#: Refused records of a micro-batch (the streaming benchmark's 1% malformed messages).
QUARANTINE_SHARE = 0.01


# frames shaped like the stages' ---------------------------------------------------------------
def doc_ids(rng: np.random.Generator, n: int) -> list[str]:
    return [bytes(row).hex() for row in rng.integers(0, 256, size=(n, 8), dtype=np.uint8)]


def texts(rng: np.random.Generator, n: int) -> list[str]:
    picks = rng.integers(0, len(WORDS), size=(n, 40))
    return [" ".join(WORDS[i] for i in row) for row in picks]


def entities(rng: np.random.Generator, n: int) -> list[list[dict[str, Any]]]:
    out = []
    for count in rng.integers(0, 5, size=n):
        starts = sorted(rng.integers(0, 200, size=count).tolist())
        out.append(
            [
                {
                    "text": WORDS[s % len(WORDS)].title(),
                    "label": LABELS[s % len(LABELS)],
                    "start_char": s,
                    "end_char": s + 6,
                }
                for s in starts
            ]
        )
    return out


def frame(table: str, day: str, n: int, seed: int, dim: int) -> pl.DataFrame:
    """n rows of `table` for `day`, as the stage writes them (its polars types)."""
    rng = np.random.default_rng(seed)
    ids = doc_ids(rng, n)
    ingest = pl.Series("ingest_date", [date.fromisoformat(day)] * n, dtype=pl.Date)
    sources = [SOURCES[i] for i in rng.integers(0, len(SOURCES), size=n)]
    langs = [LANGS[i] for i in rng.integers(0, len(LANGS), size=n)]
    if table == "raw_text":
        body = texts(rng, n)
        return pl.DataFrame(
            {
                "doc_id": ids,
                "source": sources,
                "source_id": [f"bench:0:{seed}:{i}" for i in range(n)],
                "event_time": pl.Series([time.time()] * n).cast(pl.Datetime("us", "UTC")),
                "ingest_date": ingest,
                "file": [f"kafka/bench/{seed}.jsonl"] * n,
                "text": body,
                "metadata": ["{}"] * n,
            }
        )
    if table == "quarantine/raw_text":
        return pl.DataFrame(
            {
                "stage": ["raw_text"] * n,
                "ingest_date": ingest,
                "doc_id": [None] * n,
                "file": [f"kafka/bench/{seed}.jsonl"] * n,
                "location": [f"offset {i}" for i in range(n)],
                "reason": ["malformed JSON"] * n,
                "payload": ['{"id": "broken'] * n,
                "raw": [b'{"id": "broken'] * n,
                "raw_size": [14] * n,
            },
            schema_overrides={"doc_id": pl.String},
        )
    if table == "cleaned_text":
        body = texts(rng, n)
        return pl.DataFrame(
            {
                "doc_id": ids,
                "source": sources,
                "ingest_date": ingest,
                "text": body,
                "n_chars": [len(t) for t in body],
                "content_hash": [hashlib.sha256(t.encode()).hexdigest() for t in body],
                "is_duplicate": [False] * n,
                "duplicate_of": pl.Series([None] * n, dtype=pl.String),
                "lang": langs,
                "lang_score": rng.uniform(0.5, 1.0, n),
            }
        )
    if table == "tokens":
        lengths = rng.integers(20, 120, size=n)
        return pl.DataFrame(
            {
                "doc_id": ids,
                "ingest_date": ingest,
                "token_ids": pl.Series(
                    [rng.integers(0, 30_000, size=k).tolist() for k in lengths],
                    dtype=pl.List(pl.UInt32),
                ),
                "n_tokens": lengths,
                "truncated": [False] * n,
            }
        )
    if table == "features":
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return pl.DataFrame(
            {
                "doc_id": ids,
                "ingest_date": ingest,
                "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, dim)),
                "embedding_model": ["all-MiniLM-L6-v2"] * n,
                "embedding_model_version": ["bench"] * n,
            }
        )
    if table == "predictions":
        scores = rng.uniform(0.0, 1.0, n)
        return pl.DataFrame(
            {
                "doc_id": ids,
                "ingest_date": ingest,
                "source": sources,
                "lang": langs,
                "is_duplicate": [False] * n,
                "sentiment_label": ["positive" if s > 0.5 else "negative" for s in scores],
                "sentiment_score": scores,
                "sentiment_model": ["sentiment-head"] * n,
                "sentiment_model_version": ["bench"] * n,
                "entities": pl.Series(
                    entities(rng, n),
                    dtype=pl.List(
                        pl.Struct(
                            {
                                "text": pl.String,
                                "label": pl.String,
                                "start_char": pl.Int64,
                                "end_char": pl.Int64,
                            }
                        )
                    ),
                ),
                "ner_model": ["en_core_web_sm"] * n,
                "ner_model_version": ["bench"] * n,
                "skipped_reason": pl.Series([None] * n, dtype=pl.String),
            }
        )
    raise ValueError(f"no frame for {table}")


# timing ----------------------------------------------------------------------------------------
@dataclass
class Timings:
    """Seconds of repeated runs of each measured thing, by name."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def time(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        self.seconds.setdefault(name, []).append(time.perf_counter() - started)
        return result

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


@dataclass
class Lakes:
    """The two lakes under one folder, and the data both hold."""

    root: Path
    dim: int
    old: manifest_lake.Lake = field(init=False)
    new: Lake = field(init=False)

    def __post_init__(self) -> None:
        self.old = manifest_lake.Lake(str(self.root / "manifest"))
        self.new = Lake(str(self.root / "delta"))

    def write_both(self, table: str, day: str, part: str, rows: pl.DataFrame) -> None:
        self.old.write(table, day, rows, part)
        self.new.write(table, day, rows, part)


def day_of(i: int) -> str:
    return (FIRST_DAY + timedelta(days=i)).isoformat()


def fill(lakes: Lakes, table: str, day: str, parts: range, rows: int, seed: int) -> None:
    for p in parts:
        lakes.write_both(table, day, f"p{p:05d}", frame(table, day, rows, seed + p, lakes.dim))


def plain_read(files: list[str]) -> pl.DataFrame:
    return pl.read_parquet(files)


def check_rows(what: str, **frames: pl.DataFrame) -> int:
    """The same rows from every reader (counts and doc ids), or the figures mean nothing."""
    counts = {name: f.height for name, f in frames.items()}
    ids = {name: sorted(f["doc_id"].to_list()) for name, f in frames.items() if f.height}
    if len(set(counts.values())) != 1 or len({tuple(v) for v in ids.values()}) > 1:
        raise AssertionError(f"{what}: the readers disagree: {counts}")
    return next(iter(counts.values()))


# the four measurements -------------------------------------------------------------------------
Row = tuple[str, float, float, float | None]  # what, old s, new s, plain s


def bench_commits(lakes: Lakes, args: argparse.Namespace, seed: int) -> list[Row]:
    out: list[Row] = []
    for table in ("predictions", "features"):
        # the table exists already (earlier days), as in a running pipeline
        fill(lakes, table, day_of(900), range(1), args.rows, seed)
        for k, held in enumerate(args.parts):
            day = day_of(100 + k)
            fill(lakes, table, day, range(held), args.rows, seed)
            timings = Timings()
            for r in range(args.repeat):
                part = f"p{held + r:05d}"
                rows = frame(table, day, args.rows, seed + held + r, lakes.dim)
                new = Lake(lakes.new.root, part_txn=(part, f"bench:{table}:{part}", 2 * r + 2))
                timings.time("old", lakes.old.write, table, day, rows, part)
                timings.time("new", new.write, table, day, rows, part)
                target = lakes.root / f"plain-{r}.parquet"
                timings.time(
                    "plain", rows.write_parquet, target, compression="zstd", statistics=True
                )
            check_rows(
                f"{table} {day}",
                old=lakes.old.read_day(table, day),
                new=lakes.new.read_day(table, day),
            )
            out.append(
                (
                    f"{table}: commit {args.rows} rows, day holds {held} parts",
                    timings.median("old"),
                    timings.median("new"),
                    timings.median("plain"),
                )
            )
    return out


def read_figures(
    lakes: Lakes, label: str, table: str, days: list[str], repeat: int
) -> tuple[Row, int]:
    files = lakes.new.files(table, days)
    timings = Timings()
    results: dict[str, pl.DataFrame] = {}
    for _ in range(repeat):
        results["old"] = timings.time("old", lambda: lakes.old.read_days(table, days))
        results["new"] = timings.time("new", lambda: lakes.new.read_days(table, days))
        results["plain"] = timings.time("plain", lambda: plain_read(files))
    rows = check_rows(label, **results)
    row = (
        f"{label} ({rows} rows, {len(files)} files)",
        timings.median("old"),
        timings.median("new"),
        timings.median("plain"),
    )
    return row, rows


def bench_day_reads(lakes: Lakes, args: argparse.Namespace, seed: int) -> list[Row]:
    table = "predictions"
    days = {held: day_of(200 + k) for k, held in enumerate(args.read_parts)}
    for held, day in days.items():
        fill(lakes, table, day, range(held), args.rows, seed + 10_000)
    out = [
        read_figures(lakes, f"read a day of {held} parts", table, [day], args.repeat)[0]
        for held, day in days.items()
    ]
    for held, day in days.items():
        lakes.new.compact(table, day)
        out.append(
            read_figures(
                lakes, f"read a day of {held} parts, compacted", table, [day], args.repeat
            )[0]
        )
    return out


def bench_month(lakes: Lakes, args: argparse.Namespace, seed: int) -> list[Row]:
    table = "predictions"
    days = [day_of(300 + i) for i in range(args.days)]
    for i, day in enumerate(days):
        fill(lakes, table, day, range(args.day_parts), args.rows, seed + 20_000 + 1_000 * i)
    label = f"read {args.days} days x {args.day_parts} parts"
    out = [read_figures(lakes, label, table, days, args.repeat)[0]]
    for day in days:
        lakes.new.compact(table, day)
    out.append(read_figures(lakes, f"{label}, compacted", table, days, args.repeat)[0])
    return out


def micro_batch(
    lake: manifest_lake.Lake | Lake, day: str, index: int, rows: int, dim: int, seed: int
) -> dict[str, float]:
    """What a Kafka micro-batch run does to the lake; seconds of its reads and of its commits."""
    part = f"bench-0-g1-{index * rows:012d}-{(index + 1) * rows - 1:012d}"
    if isinstance(lake, Lake):  # the run's lake: the range's app transaction on every commit
        lake = Lake(lake.root, part_txn=(part, f"nlp-kafka:bench:0:g1:{index * rows}", 2 * index))
    frames = {
        table: frame(
            table,
            day,
            max(1, int(rows * QUARANTINE_SHARE)) if table.startswith("quarantine/") else rows,
            seed + index,
            dim,
        )
        for table in MICRO_BATCH_TABLES
    }
    spent = {"reads": 0.0, "commits": 0.0}

    def timed(kind: str, fn: Callable[[], Any]) -> None:
        begun = time.perf_counter()
        fn()
        spent[kind] += time.perf_counter() - begun

    timed("reads", lambda: lake.read_day_columns("raw_text", day, ["doc_id"], exclude_parts=[part]))
    for table in MICRO_BATCH_TABLES[:2]:
        timed("commits", functools.partial(lake.write, table, day, frames[table], part))
    timed(
        "reads",
        lambda: lake.read_day_columns(
            "cleaned_text", day, ["content_hash", "doc_id"], exclude_parts=[part]
        ),
    )
    for table in MICRO_BATCH_TABLES[2:]:
        timed("commits", functools.partial(lake.write, table, day, frames[table], part))
    return {**spent, "total": spent["reads"] + spent["commits"]}


def bench_stream(lakes: Lakes, args: argparse.Namespace, seed: int) -> list[Row]:
    day = day_of(400)
    for table in MICRO_BATCH_TABLES:  # every table exists already (earlier days)
        fill(lakes, table, day_of(901), range(1), 3, seed)
    seconds: dict[str, list[float]] = {}
    done = 0
    out: list[Row] = []
    for position in args.batches:
        while done < position - 1:  # the day up to just before this micro-batch
            for lake in (lakes.old, lakes.new):
                micro_batch(lake, day, done, args.rows, lakes.dim, seed)
            done += 1
        for _ in range(args.repeat):
            for name, lake in (("old", lakes.old), ("new", lakes.new)):
                spent = micro_batch(lake, day, done, args.rows, lakes.dim, seed)
                for kind, value in spent.items():
                    seconds.setdefault(f"{name}{position}{kind}", []).append(value)
            done += 1

        def per_message(name: str, kind: str, position: int = position) -> float:
            return statistics.median(seconds[f"{name}{position}{kind}"]) / args.rows

        last = position + args.repeat - 1
        out.append(
            (
                f"micro-batch {position}-{last} of a day, per message",
                per_message("old", "total"),
                per_message("new", "total"),
                None,
            )
        )
        for kind in ("reads", "commits"):
            out.append(
                (f"  of which {kind}", per_message("old", kind), per_message("new", kind), None)
            )
    first, last = args.batches[0], args.batches[-1]
    out.append(
        (
            f"  growth: micro-batch {last} over {first}",
            statistics.median(seconds[f"old{last}total"])
            / statistics.median(seconds[f"old{first}total"]),
            statistics.median(seconds[f"new{last}total"])
            / statistics.median(seconds[f"new{first}total"]),
            None,
        )
    )
    check_rows(
        "raw_text of the streamed day",
        old=lakes.old.read_day("raw_text", day),
        new=lakes.new.read_day("raw_text", day),
    )
    return out


# output ----------------------------------------------------------------------------------------
def print_table(title: str, rows: list[Row], unit: str = "ms") -> None:
    scale = {"ms": 1e3, "us": 1e6, "x": 1.0}
    print(f"\n{title}")
    print(
        f"{'':58} {'old ' + unit:>10} {'new ' + unit:>10} {'new/old':>8} {'plain ' + unit:>10} "
        f"{'new/plain':>9}"
    )
    for what, old, new, plain in rows:
        f = 1.0 if what.strip().startswith("growth") else scale[unit]
        plain_s = "" if plain is None else f"{plain * f:>10.2f}"
        over_plain = "" if plain is None else f"{new / plain:>9.2f}"
        print(
            f"{what:58} {old * f:>10.2f} {new * f:>10.2f} {new / old:>8.2f} {plain_s:>10} "
            f"{over_plain:>9}"
        )


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300, help="rows of a micro-batch part")
    parser.add_argument("--dim", type=int, default=384, help="floats of a features embedding")
    parser.add_argument("--repeat", type=int, default=7, help="timings per figure (median)")
    parser.add_argument("--parts", type=ints, default=[0, 10, 100], help="parts before a commit")
    parser.add_argument("--read-parts", type=ints, default=[1, 10, 100], help="parts of a day")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--day-parts", type=int, default=10)
    parser.add_argument("--batches", type=ints, default=[1, 10, 100], help="micro-batches")
    parser.add_argument("--only", default="commit,day,days,stream")
    parser.add_argument("--dir", help="work folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    started = time.perf_counter()
    print(f"bench.lake: {load()}")
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="bench-lake-"))
    try:
        lakes = Lakes(tmp, args.dim)
        if "commit" in only:
            print_table(
                "a micro-batch commit (median of "
                f"{args.repeat}; plain: write_parquet of the frame)",
                bench_commits(lakes, args, seed=1),
            )
        if "day" in only:
            print_table(
                "reading one day of predictions (plain: pl.read_parquet of the Delta table's "
                "live files)",
                bench_day_reads(lakes, args, seed=2),
            )
        if "days" in only:
            print_table(f"reading {args.days} days of predictions", bench_month(lakes, args, 3))
        if "stream" in only:
            print_table(
                "the lake's cost per message of a Kafka micro-batch (2 read_day_columns, "
                f"{len(MICRO_BATCH_TABLES)} commits)",
                bench_stream(lakes, args, seed=4),
                unit="us",
            )
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{load()}; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
