"""The pieces of the backfill-at-scale benchmark (`python -m bench.engines --backfill`).

- `sentence_pools` / `unique_documents`: many days of documents whose texts never repeat, made
  only of real sentences of the sample sources (the landing corpus and the labelled set);
- `cpu_loop_rate`: the machine's peak for this kind of work, measured in the same run (a plain
  Python loop in 1 and in N processes at once: how much CPU the workers can really get);
- `spark_task_spans` / `amdahl`: the Spark engine's wall time split into the driver's serial
  share and the executors' parallel work (task times from Spark's event log), and the docs/s
  that model predicts for more workers.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from nlp_assets.kernels.clean import CleanConfig, clean_text_expr
from nlp_assets.kernels.ingest import read_landing_day

#: A document gets as many sentences as a document of its source has on average, between these.
MIN_SENTENCES = 2
MAX_SENTENCES = 10
MIN_SENTENCE_CHARS = 15
MAX_SENTENCE_CHARS = 1_000

#: After . ! ? before a capital or digit; after a spaced " . " (the lower-cased, tokenised movie
#: reviews); at line breaks.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-ZÀ-Ý0-9])|(?<=\s[.!?])\s+|\n+")


# unique documents from real sentences ---------------------------------------------------------
def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (whitespace collapsed), fragments and over-long ones left out."""
    parts = (" ".join(part.split()) for part in _SENTENCE_END.split(text))
    return [p for p in parts if MIN_SENTENCE_CHARS <= len(p) <= MAX_SENTENCE_CHARS and " " in p]


@dataclass(frozen=True)
class Pool:
    """Distinct sentences of one source, and how many a document of that source has."""

    sentences: tuple[str, ...]
    per_doc: int


def pools_from_texts(texts_by_source: Mapping[str, Iterable[str]]) -> dict[str, Pool]:
    """Split each source's texts into sentences; a sentence whose cleaned, lower-cased form was
    already seen (in any source) is dropped, so no two pool sentences clean to the same text."""
    seen: set[str] = set()
    pools: dict[str, Pool] = {}
    for source in sorted(texts_by_source):
        per_text = [split_sentences(t) for t in texts_by_source[source]]
        flat = [s for sentences in per_text for s in sentences]
        if not flat:
            continue
        keys = (
            pl.DataFrame({"text": flat}, schema={"text": pl.String})
            .select(clean_text_expr("text", CleanConfig()).str.to_lowercase())["text"]
            .to_list()
        )
        kept = []
        for sentence, key in zip(flat, keys, strict=True):
            if key and key not in seen:
                seen.add(key)
                kept.append(sentence)
        mean = len(flat) / max(1, sum(1 for s in per_text if s))
        per_doc = min(MAX_SENTENCES, max(MIN_SENTENCES, round(mean)))
        if len(kept) > per_doc:
            pools[source] = Pool(tuple(kept), per_doc)
    return pools


def sentence_pools(landing: Path, labelled: Path | None) -> dict[str, Pool]:
    """Pools from every landed sample day (by source) and the labelled set (by domain)."""
    texts: dict[str, list[str]] = {}
    days = sorted(p.name for p in landing.iterdir() if p.is_dir()) if landing.is_dir() else []
    for day in days:
        docs = read_landing_day(landing, date.fromisoformat(day)).docs
        for source, text in docs.select("source", "text").iter_rows():
            texts.setdefault(source, []).append(text or "")
    if labelled is not None and labelled.is_file():
        for domain, text in pl.read_parquet(labelled).select("domain", "text").iter_rows():
            texts.setdefault(f"labelled_{domain}", []).append(text)
    if not texts:
        raise SystemExit(f"no sample corpus under {landing}: run `make data` first")
    return pools_from_texts(texts)


def pool_document(pool: Pool, i: int) -> str:
    """The i-th document of a pool: `k` of its sentences, first S[i mod N], then steps of r+1
    (r = i // N). The pair (first, second) differs for every i < N * (N - 1), so no two
    documents of a pool are the same sentences; `k` averages the pool's `per_doc`."""
    n = len(pool.sentences)
    step = i // n + 1
    if step >= n:
        raise ValueError(f"a pool of {n} sentences makes at most {n * (n - 1)} documents")
    k = MIN_SENTENCES + (i * 7919) % (2 * pool.per_doc - 2 * MIN_SENTENCES + 1)
    return " ".join(pool.sentences[(i + j * step) % n] for j in range(k))


def apportion(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """`total` split in proportion to `weights` (largest remainders, so it adds up exactly)."""
    whole = sum(weights.values())
    exact = {k: total * w / whole for k, w in weights.items()}
    shares = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: (shares[k] - exact[k], k))
    for key in by_remainder[: total - sum(shares.values())]:
        shares[key] += 1
    return shares


def unique_documents(
    pools: Mapping[str, Pool], n_docs: int, first_day: date, n_days: int
) -> pl.DataFrame:
    """`n_docs` raw documents over `n_days` days from `first_day`, no text repeated.

    Each source gets documents in proportion to its sentences; sources are interleaved so every
    day has the same mix, and days are contiguous blocks of the interleaved order."""
    shares = apportion(n_docs, {source: len(p.sentences) for source, p in pools.items()})
    for source, count in shares.items():
        limit = len(pools[source].sentences) * (len(pools[source].sentences) - 1)
        if count > limit:
            raise ValueError(
                f"{source} has {len(pools[source].sentences)} sentences: at most {limit} "
                f"unique documents, {count} asked; ask for fewer documents"
            )
    texts, sources, position = [], [], []
    for source in sorted(shares):
        count = shares[source]
        texts += [pool_document(pools[source], i) for i in range(count)]
        sources += [source] * count
        position += [(i + 0.5) / count for i in range(count)]
    frame = (
        pl.DataFrame({"source": sources, "text": texts, "_position": position})
        .sort("_position", "source", maintain_order=True)
        .drop("_position")
        .with_row_index("_n")
    )
    frame = frame.with_columns(
        (pl.lit(first_day) + pl.duration(days=pl.col("_n") * n_days // n_docs)).alias("ingest_date")
    )
    frame = frame.with_columns(
        pl.format(
            "bf-{}-{}",
            pl.col("ingest_date").dt.strftime("%Y%m%d"),
            pl.col("_n").cast(pl.String).str.zfill(7),
        ).alias("doc_id"),
        pl.format("bench-backfill/{}.jsonl", pl.col("source")).alias("file"),
    ).drop("_n")
    if frame["text"].n_unique() != frame.height:  # the construction says it cannot happen
        raise AssertionError("unique_documents made a repeated text")
    return frame.select("doc_id", "source", "ingest_date", "file", "text")


# the machine's peak -----------------------------------------------------------------------------
def _loop(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < deadline:
        for _ in range(10_000):
            count += 1
    return count


def cpu_loop_rate(processes: int, seconds: float = 1.5) -> float:
    """Iterations per second of a plain Python loop, summed over `processes` run at once."""
    if processes == 1:
        return _loop(seconds) / seconds
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return sum(pool.map(_loop, [seconds] * processes)) / seconds


# serial driver share vs parallel executor work ----------------------------------------------------
@dataclass(frozen=True)
class TaskSpan:
    launch_s: float  # epoch seconds
    finish_s: float
    executor: str

    @property
    def seconds(self) -> float:
        return self.finish_s - self.launch_s


def spark_task_spans(event_log_dir: Path) -> list[TaskSpan]:
    """Every finished task of the applications logged under `event_log_dir` (Spark's JSON event
    log: one event a line; `SparkListenerTaskEnd` has launch and finish times in ms)."""
    spans = []
    for path in sorted(p for p in event_log_dir.rglob("*") if p.is_file()):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                info = json.loads(line)["Task Info"]
                if info.get("Finish Time", 0) and not info.get("Failed", False):
                    spans.append(
                        TaskSpan(
                            info["Launch Time"] / 1000,
                            info["Finish Time"] / 1000,
                            str(info.get("Executor ID")),
                        )
                    )
    return spans


def busy_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Length of the union of intervals: wall time during which at least one task ran."""
    total, end = 0.0, float("-inf")
    for start, finish in sorted(intervals):
        if finish <= end:
            continue
        total += finish - max(start, end)
        end = finish
    return total


@dataclass(frozen=True)
class Split:
    """One stage on Spark: wall seconds on the driver, of which `serial_s` no task ran, and
    `work_s` the sum of task seconds (what more workers share)."""

    docs: int
    wall_s: float
    serial_s: float
    work_s: float

    @property
    def per_worker_docs_s(self) -> float:
        return self.docs / self.work_s if self.work_s else float("inf")

    @property
    def serial_share(self) -> float:
        """Amdahl's serial fraction on one worker: serial / (serial + all the task work)."""
        return self.serial_s / (self.serial_s + self.work_s)


def split_stage(docs: int, started: float, finished: float, spans: Sequence[TaskSpan]) -> Split:
    """The stage's wall time from `started` to `finished` (epoch s) and the tasks inside it."""
    inside = [(max(s.launch_s, started), min(s.finish_s, finished)) for s in spans]
    inside = [(a, b) for a, b in inside if b > a]
    wall = finished - started
    return Split(
        docs=docs,
        wall_s=wall,
        serial_s=max(0.0, wall - busy_seconds(inside)),
        work_s=sum(b - a for a, b in inside),
    )


def amdahl(split: Split, workers: int) -> float:
    """Predicted docs/s on `workers` one-core workers: T(w) = serial + work / w.

    Assumes the tasks spread evenly and each worker keeps the measured per-worker rate; the
    serial part (driver ships the input, collects and sorts the output) does not shrink, so
    docs/s never exceeds docs / serial however many workers."""
    return split.docs / (split.serial_s + split.work_s / workers)
