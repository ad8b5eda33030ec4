"""A small lake in today's layout, written by today's writer: the fixture of the lake migration.

`nlp_assets_tests/fixtures/lake_v1/` is this module's output, committed before the writer
changes, with what today's reader returns for it in `lake_v1.expected.json`
(`expectations`); `nlp_assets_tests/unit/test_lake_fixture.py` pins both. Regenerate with

    python -m dev.lake_fixture --out nlp_assets_tests/fixtures/lake_v1 --replace

Contents are synthetic (no model runs) and fixed: the same doc ids, rows and part names every
time, checked against the stage schemas (`nlp_assets.schemas`). What the writer itself names
after the clock (the `_parts/<token>/` folders, the manifests' `published_at` and `writer`, the
day leases) differs between runs; nothing compared depends on it. Three days, each a layout the
lake holds today:

- `PRE_MANIFEST_DAY`: every asset as the writer before manifests left it (`<day>/<part>.parquet`,
  `write_pre_manifest`; a killed writer's hidden temp file in cleaned_text). raw_text, and the
  quarantines of its Kafka run, then got one micro-batch from today's writer: generation 1 lists
  the old files beside the new one.
- `WHOLE_DAY`: the part `day` for every stage. raw_text first had two Kafka micro-batches that a
  whole-day backfill replaced; `quarantine/kafka` keeps those micro-batches' parts (the backfill
  does not write it). predictions: a first attempt killed before it published (its file stays,
  unreferenced), then the retry.
- `KAFKA_DAY`: three micro-batches (`OffsetRange.part` names) for the part-scope stages, in the
  order a Kafka run writes them (dead letters, the day index of doc ids, quarantine, data). The
  second range ran twice (every stage has a superseded generation); the third's first attempt of
  raw_text was killed while publishing (an unreferenced file and a `.tmp-` manifest stay) and
  held a re-sent message, quarantined as a duplicate. The day-scope stages (aggregates, quality,
  reports) are whole days on every day, as the IO manager stores them: here refreshed twice.

Plus the unpartitioned `sentiment_model` (`data.parquet`) and the day leases (`_locks/`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandera.polars as pa
import polars as pl
from upath import UPath

from nlp_assets import schemas
from nlp_assets.kafka.messages import DLQ_STAGE, OffsetRange
from nlp_assets.kafka.raw import RAW_ASSET, cross_part_duplicates
from nlp_assets.kernels.aggregate import AGGREGATES_SCHEMA
from nlp_assets.kernels.clean import CLEANED_SCHEMA
from nlp_assets.kernels.features import features_schema
from nlp_assets.kernels.ingest import BLANK_TEXT, RAW_SCHEMA
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.kernels.quality import QUALITY_SCHEMA
from nlp_assets.kernels.quarantine import QUARANTINE_SCHEMA, quarantine_docs
from nlp_assets.kernels.report import MANIFEST_SCHEMA
from nlp_assets.kernels.sentiment import SentimentHead
from nlp_assets.kernels.tokenize import TOKENS_SCHEMA
from nlp_assets.lake import DAY_PART, MANIFEST_DIR, QUARANTINE, DayLocks, DayVersion, Lake

PRE_MANIFEST_DAY = "2026-11-16"
WHOLE_DAY = "2026-11-17"
KAFKA_DAY = "2026-11-18"
DAYS = (PRE_MANIFEST_DAY, WHOLE_DAY, KAFKA_DAY)
TOPIC = "nlp-documents"
SOURCE = TOPIC  # what a Kafka message without `source` gets
DIM = 4
EMBEDDER = ("fixture-embedder", "1")
SENTIMENT = ("sentiment_head", "0a1b2c3d4e5f")
NER = ("fixture-ner", "1")
OWNER = "lake-fixture"
#: The stages the pipeline stores per part (a micro-batch writes its own part) and per day.
PART_STAGES = ("raw_text", "cleaned_text", "tokens", "features", "predictions")
DAY_STAGES = ("aggregates", "quality", "reports")

TEXTS = (
    "The new library opened downtown and readers loved it.",
    "Service at the station was slow and the trains were late again.",
    "A wonderful concert in Paris last night, the crowd sang along.",
    "The update broke my phone; support never answered.",
    "Great value for the price, I would buy it again.",
    "The museum in Berlin was closed without any notice.",
    "Le film était magnifique et les acteurs excellents.",
    "Delivery took three weeks and the box arrived damaged.",
    "Friendly staff, clean rooms and a quiet street.",
    "The report from London describes a difficult winter.",
)


def doc_id(n: int) -> str:
    return hashlib.sha256(f"lake_v1/{n}".encode()).hexdigest()[:16]


def text(n: int) -> str:
    return TEXTS[n % len(TEXTS)] + f" (#{n})"


# frames of each stage, checked against its schema -------------------------------------------
def _checked(frame: pl.DataFrame, schema: pa.DataFrameSchema) -> pl.DataFrame:
    schema.validate(frame, lazy=True)
    return frame


def raw_frame(ns: Iterable[int], day: str, file: str) -> pl.DataFrame:
    rows = [
        {
            "doc_id": doc_id(n),
            "source": SOURCE,
            "source_id": f"msg-{n}",
            "event_time": datetime.fromisoformat(f"{day}T08:00:00+00:00").replace(minute=n % 60),
            "ingest_date": date.fromisoformat(day),
            "file": file,
            "text": text(n),
            "metadata": json.dumps({"n": n}),
        }
        for n in ns
    ]
    frame = pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")
    return _checked(frame, schemas.raw_text_schema())


def cleaned_frame(ns: Iterable[int], day: str, duplicates: dict[int, int]) -> pl.DataFrame:
    rows = []
    for n in ns:
        body = text(duplicates.get(n, n)).split(" (#")[0]  # a duplicate has its original's text
        rows.append(
            {
                "doc_id": doc_id(n),
                "source": SOURCE,
                "ingest_date": date.fromisoformat(day),
                "text": body,
                "n_chars": len(body),
                "content_hash": hashlib.sha256(body.encode()).hexdigest(),
                "is_duplicate": n in duplicates,
                "duplicate_of": doc_id(duplicates[n]) if n in duplicates else None,
                "lang": "fr" if body.startswith("Le ") else "en",
                "lang_score": 0.75 + (n % 5) / 20,
            }
        )
    frame = pl.DataFrame(rows, schema=CLEANED_SCHEMA, orient="row")
    return _checked(frame, schemas.cleaned_text_schema())


def tokens_frame(ns: Iterable[int], day: str) -> pl.DataFrame:
    rows = [
        {
            "doc_id": doc_id(n),
            "ingest_date": date.fromisoformat(day),
            "token_ids": [101, 1000 + n, 2000 + n, 102],
            "n_tokens": 4,
            "truncated": False,
        }
        for n in ns
    ]
    frame = pl.DataFrame(rows, schema=TOKENS_SCHEMA, orient="row")
    return _checked(frame, schemas.tokens_schema())


def features_frame(ns: Iterable[int], day: str) -> pl.DataFrame:
    rows = [
        {
            "doc_id": doc_id(n),
            "ingest_date": date.fromisoformat(day),
            "ngrams": [{"ngram": word, "count": 1} for word in text(n).lower().split()[:2]],
            "tfidf_terms": [{"term": text(n).lower().split()[1], "score": 0.5}],
            "embedding": [1.0 if i == n % DIM else 0.0 for i in range(DIM)],  # unit norm
            "embedding_model": EMBEDDER[0],
            "embedding_model_version": EMBEDDER[1],
        }
        for n in ns
    ]
    frame = pl.DataFrame(rows, schema=features_schema(DIM), orient="row")
    return _checked(frame, schemas.features_schema_for(DIM))


def predictions_frame(ns: Iterable[int], day: str, duplicates: dict[int, int]) -> pl.DataFrame:
    rows = []
    for n in ns:
        skipped = n in duplicates
        positive = n % 2 == 0
        rows.append(
            {
                "doc_id": doc_id(n),
                "ingest_date": date.fromisoformat(day),
                "source": SOURCE,
                "lang": "fr" if text(n).startswith("Le ") else "en",
                "is_duplicate": skipped,
                "sentiment_label": None if skipped else ("positive" if positive else "negative"),
                "sentiment_score": None if skipped else (0.875 if positive else 0.125),
                "sentiment_model": SENTIMENT[0],
                "sentiment_model_version": SENTIMENT[1],
                "entities": [{"text": "Paris", "label": "GPE", "start_char": 24, "end_char": 29}]
                if "Paris" in text(n)
                else [],
                "ner_model": NER[0],
                "ner_model_version": NER[1],
                "skipped_reason": "duplicate" if skipped else None,
            }
        )
    frame = pl.DataFrame(rows, schema=PREDICTIONS_SCHEMA, orient="row")
    return _checked(frame, schemas.predictions_schema())


def aggregates_frame(predictions: pl.DataFrame) -> pl.DataFrame:
    scored = predictions.filter(pl.col("sentiment_label").is_not_null())
    frame = (
        scored.group_by("ingest_date", "lang", "sentiment_label")
        .agg(
            pl.len().cast(pl.Int64).alias("n_docs"),
            pl.lit(0, pl.Int64).alias("n_duplicates"),
            pl.col("sentiment_score").mean().alias("mean_sentiment_score"),
        )
        .with_columns(
            pl.lit([{"text": "Paris", "label": "GPE", "count": 1}]).alias("top_entities"),
            pl.lit([{"ngram": "the", "count": 2}]).alias("top_ngrams"),
        )
        .sort("lang", "sentiment_label")
        .cast(AGGREGATES_SCHEMA)  # type: ignore[arg-type]
        .select(list(AGGREGATES_SCHEMA))
    )
    return _checked(frame, schemas.aggregates_schema())


def quality_frame(predictions: pl.DataFrame, quarantined: int) -> pl.DataFrame:
    n_docs = predictions.height
    scored = predictions.filter(pl.col("sentiment_label").is_not_null())
    positive = scored.filter(pl.col("sentiment_label") == "positive").height
    row = {
        "ingest_date": predictions["ingest_date"][0],
        "source": SOURCE,
        "n_docs": n_docs,
        "n_scored": scored.height,
        "label_mix": [
            {"label": "positive", "n_docs": positive},
            {"label": "negative", "n_docs": scored.height - positive},
        ],
        "positive_share": positive / scored.height,
        "mean_sentiment_score": scored["sentiment_score"].mean(),
        "skipped_share": (n_docs - scored.height) / n_docs,
        "n_quarantined": quarantined,
        "quarantined_share": quarantined / (n_docs + quarantined),
        "entities_per_doc": predictions["entities"].list.len().sum() / n_docs,
        "entities_per_100_tokens": None,
        "baseline_days": 0,
        "baseline_docs": 0,
        "baseline_positive_share": None,
        "baseline_skipped_share": None,
        "centroid_distance": None,
    }
    frame = pl.DataFrame([row], schema=QUALITY_SCHEMA, orient="row")
    return _checked(frame, schemas.quality_schema())


def reports_frame(day: str, size: int) -> pl.DataFrame:
    rows = [
        {
            "ingest_date": date.fromisoformat(day),
            "artifact": artifact,
            "path": f"/srv/nlp/reports/{day}/{name}",
            "format": name.rsplit(".", 1)[1],
            "bytes": size + i,
        }
        for i, (artifact, name) in enumerate(
            [("report", "report.html"), ("chart_label_mix", "charts/label_mix.png")]
        )
    ]
    frame = pl.DataFrame(rows, schema=MANIFEST_SCHEMA, orient="row")
    return _checked(frame, schemas.reports_schema())


def quarantine_rows(stage: str, day: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows of `QUARANTINE_SCHEMA` (an empty frame, with its columns, for none)."""
    shaped = [
        {
            **dict.fromkeys(QUARANTINE_SCHEMA),
            "stage": stage,
            "ingest_date": date.fromisoformat(day),
            **row,
        }
        for row in rows
    ]
    for row in shaped:
        if row["raw"] is not None:
            row["raw_size"] = len(row["raw"])
    return pl.DataFrame(shaped, schema=QUARANTINE_SCHEMA, orient="row")


def dead_letter(day: str, offsets: OffsetRange, offset: int, reason: str, raw: bytes) -> dict:
    """A dead letter as the Kafka raw stage keeps it (`dead_letter_frame`'s columns)."""
    return {
        "file": f"{day}/kafka/{offsets.part}.jsonl",
        "location": f"{offsets.topic}/{offsets.partition}/{offset}",
        "reason": reason,
        "payload": raw.decode("utf-8", "replace"),
        "raw": raw,
    }


def sentiment_model_frame() -> pl.DataFrame:
    head = SentimentHead(
        labels=("negative", "positive"),
        coef=np.array([[0.5, -0.25, 0.125, 1.0]]),
        intercept=np.array([0.0625]),
        embedding_model=EMBEDDER[0],
        embedding_model_version=EMBEDDER[1],
    )
    return head.to_frame()


# writers -------------------------------------------------------------------------------------
def write_pre_manifest(root: Path, asset: str, day: str, frame: pl.DataFrame, part: str) -> Path:
    """A part as the writer before manifests wrote it (commit 1628ff9, `Lake.write`): the file
    `<day>/<part>.parquet` itself, zstd with statistics; no manifest, no `_parts`."""
    path = root / asset / day / f"{part}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path, compression="zstd", statistics=True)
    return path


def leave_pre_manifest_temp(root: Path, asset: str, day: str, frame: pl.DataFrame, part: str):
    """What that writer left when killed before its rename: `.<part>.<hex>.tmp`."""
    path = root / asset / day / f".{part}.{uuid.uuid4().hex}.tmp"
    frame.write_parquet(path, compression="zstd", statistics=True)


class KilledWriter(Exception):
    """The process of a write died (a simulated SIGKILL)."""


class KilledBeforePublishing(Lake):
    """Today's writer killed after its data file is written, before the day's next manifest is
    published: the file stays, referenced by no generation. With `temp_manifest`, killed inside
    `create_exclusive` (its temp file written, not yet linked): `_manifest/.tmp-<token>` stays."""

    def __init__(self, root: str | UPath, *, temp_manifest: bool = False):
        super().__init__(root)
        self.temp_manifest = temp_manifest

    def _publish(
        self,
        asset: str,
        day: str,
        change: Callable[[dict[str, str]], dict[str, str]],
        written: float,
    ) -> tuple[DayVersion, DayVersion]:
        if self.temp_manifest:
            current = self.version(asset, day)
            body = {
                "generation": current.generation + 1,
                "parts": change(dict(current.parts)),
                "published_at": time.time(),
                "writer": f"{socket.gethostname()}:{os.getpid()}",
            }
            token = f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}"  # lake._token
            temp = self.day_dir(asset, day) / MANIFEST_DIR / f".tmp-{token}"
            temp.write_bytes(json.dumps(body, sort_keys=True).encode())
        raise KilledWriter(f"{asset} {day}: killed before publishing")


def kill_write(lake: Lake, asset: str, day: str, frame: pl.DataFrame, part: str, **kw) -> None:
    with suppress(KilledWriter):
        KilledBeforePublishing(lake.root, **kw).write(asset, day, frame, part)


# the lake ------------------------------------------------------------------------------------
def build(out: Path) -> None:
    """Write the fixture lake into `out` (an empty or missing folder)."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    locks = DayLocks(str(out), OWNER)
    lake = Lake(str(out), lease=locks)
    try:
        _pre_manifest_day(out, lake)
        _whole_day(lake)
        _kafka_day(lake)
        lake.write("sentiment_model", None, sentiment_model_frame())
        locks.release()
    finally:
        locks.close()


def _pre_manifest_day(root: Path, lake: Lake) -> None:
    day = PRE_MANIFEST_DAY
    old = {  # the day's two micro-batches before manifests, doc numbers of each
        OffsetRange(TOPIC, 0, 0, 2).part: [1, 2],
        OffsetRange(TOPIC, 1, 0, 3).part: [3, 4],  # offset 2 of partition 1: a blank text
    }
    duplicates = {4: 3}
    for part, ns in old.items():
        file = f"{day}/kafka/{part}.jsonl"
        write_pre_manifest(root, "raw_text", day, raw_frame(ns, day, file), part)
        write_pre_manifest(root, "cleaned_text", day, cleaned_frame(ns, day, duplicates), part)
        write_pre_manifest(root, "tokens", day, tokens_frame(ns, day), part)
        write_pre_manifest(root, "features", day, features_frame(ns, day), part)
        write_pre_manifest(root, "predictions", day, predictions_frame(ns, day, duplicates), part)
        blank = [{"file": file, "location": "line 3", "reason": BLANK_TEXT, "payload": "  "}]
        refused = blank if part.endswith("-p1-0-3") else []
        write_pre_manifest(
            root, f"{QUARANTINE}/raw_text", day, quarantine_rows("raw_text", day, refused), part
        )
    leave_pre_manifest_temp(
        root, "cleaned_text", day, cleaned_frame([3], day, {}), OffsetRange(TOPIC, 1, 0, 3).part
    )
    predictions = predictions_frame([1, 2, 3, 4], day, duplicates)
    write_pre_manifest(root, "aggregates", day, aggregates_frame(predictions), DAY_PART)
    write_pre_manifest(root, "quality", day, quality_frame(predictions, 1), DAY_PART)
    write_pre_manifest(root, "reports", day, reports_frame(day, 2048), DAY_PART)

    # today's writer over that day: one more micro-batch, raw_text only (its run got no further)
    offsets = OffsetRange(TOPIC, 0, 2, 4)
    lake.write_quarantine(DLQ_STAGE, day, quarantine_rows(DLQ_STAGE, day, []), offsets.part)
    lake.write_quarantine("raw_text", day, quarantine_rows("raw_text", day, []), offsets.part)
    file = f"{day}/kafka/{offsets.part}.jsonl"
    lake.write(RAW_ASSET, day, raw_frame([5, 6], day, file), offsets.part)


def _whole_day(lake: Lake) -> None:
    day = WHOLE_DAY
    # two Kafka micro-batches of raw_text in the morning ...
    morning = {OffsetRange(TOPIC, 0, 0, 3): [7, 8, 9], OffsetRange(TOPIC, 1, 0, 3): [10, 11]}
    for offsets, ns in morning.items():
        dead = (
            [dead_letter(day, offsets, 2, "message is not valid JSON", b'{"id": "m-x", "te')]
            if offsets.partition == 1
            else []
        )
        lake.write_quarantine(DLQ_STAGE, day, quarantine_rows(DLQ_STAGE, day, dead), offsets.part)
        lake.write_quarantine("raw_text", day, quarantine_rows("raw_text", day, []), offsets.part)
        file = f"{day}/kafka/{offsets.part}.jsonl"
        lake.write(RAW_ASSET, day, raw_frame(ns, day, file), offsets.part)
    # ... then a whole-day run from the landing folder replaced them (quarantine/kafka stays)
    ns = [7, 8, 9, 10, 11, 12, 13]
    raw = pl.concat(
        [
            raw_frame([7, 8, 9], day, f"{day}/kafka/{OffsetRange(TOPIC, 0, 0, 3).part}.jsonl"),
            raw_frame([10, 11], day, f"{day}/kafka/{OffsetRange(TOPIC, 1, 0, 3).part}.jsonl"),
            raw_frame([12, 13], day, f"{day}/web/feedback.jsonl"),
        ]
    )
    refused = [{"file": f"{day}/web/feedback.jsonl", "location": "line 3", "reason": BLANK_TEXT}]
    lake.write_quarantine("raw_text", day, quarantine_rows("raw_text", day, refused))
    lake.write(RAW_ASSET, day, raw)
    short = [13]  # refused by cleaning
    cleaned_refused = quarantine_docs(
        raw.filter(pl.col("doc_id").is_in([doc_id(n) for n in short])).with_columns(
            pl.lit("X").alias("text")
        ),
        stage="cleaned_text",
        day=date.fromisoformat(day),
        reason="shorter than 3 characters after cleaning",
    )
    kept = [n for n in ns if n not in short]
    duplicates = {11: 8}
    lake.write_quarantine("cleaned_text", day, cleaned_refused)
    lake.write("cleaned_text", day, cleaned_frame(kept, day, duplicates))
    lake.write("tokens", day, tokens_frame(kept, day))
    lake.write("features", day, features_frame(kept, day))
    predictions = predictions_frame(kept, day, duplicates)
    kill_write(lake, "predictions", day, predictions, DAY_PART)  # killed, then retried
    lake.write("predictions", day, predictions)
    _day_stages(lake, day, predictions, quarantined=2, report_bytes=4096)


def _kafka_day(lake: Lake) -> None:
    day = KAFKA_DAY
    a, b, c = OffsetRange(TOPIC, 0, 0, 4), OffsetRange(TOPIC, 1, 0, 3), OffsetRange(TOPIC, 0, 4, 7)
    batches = [  # (range, doc numbers, dead letters, run attempts)
        (a, [14, 15, 16, 17], [], 1),
        (b, [18, 19], [(2, "missing required field(s): text", b'{"id": "m-20"}')], 2),
        (c, [21, 22, 15], [(6, "message is not valid JSON", b"\xff\xfe not json")], 2),
    ]
    duplicates = {19: 14}
    cleaning_refused = {16: "empty after cleaning"}
    scope_day: list[int] = []
    for offsets, ns, dead, attempts in batches:
        for attempt in range(attempts):
            _micro_batch(lake, day, offsets, ns, dead, duplicates, cleaning_refused, attempt)
        scope_day += [n for n in ns if n not in scope_day]
        if offsets is b:  # the day-scope stages refreshed after the second range ...
            _refresh_day(lake, day, scope_day, duplicates, cleaning_refused, report_bytes=1024)
    # ... and once more after the last one
    _refresh_day(lake, day, scope_day, duplicates, cleaning_refused, report_bytes=8192)


def _micro_batch(
    lake: Lake,
    day: str,
    offsets: OffsetRange,
    ns: list[int],
    dead: list[tuple[int, str, bytes]],
    duplicates: dict[int, int],
    cleaning_refused: dict[int, str],
    attempt: int,
) -> None:
    """One Kafka range through every part-scope stage, as its run writes them. The first of
    two attempts of range c is killed in raw_text while publishing (before its later stages)."""
    part = offsets.part
    letters = [dead_letter(day, offsets, offset, why, raw) for offset, why, raw in dead]
    lake.write_quarantine(DLQ_STAGE, day, quarantine_rows(DLQ_STAGE, day, letters), part)
    parsed = raw_frame(ns, day, f"{day}/kafka/{part}.jsonl")
    # the day's index of doc ids (written by the reader once a part is uncovered)
    index = lake.read_day_columns(RAW_ASSET, day, ["doc_id"], exclude_parts=[part], index_after=1)
    others = index["doc_id"]
    repeated = cross_part_duplicates(parsed, others)
    raw = parsed.filter(~repeated)
    refused = quarantine_docs(
        parsed.filter(repeated),
        stage=RAW_ASSET,
        day=date.fromisoformat(day),
        reason="duplicate doc_id: already in another part of the day",
    )
    lake.write_quarantine(RAW_ASSET, day, refused, part)
    if part.endswith("-p0-4-7") and attempt == 0:
        kill_write(lake, RAW_ASSET, day, raw, part, temp_manifest=True)
        return
    lake.write(RAW_ASSET, day, raw, part)
    kept_ns = [doc for doc in ns if doc_id(doc) in set(raw["doc_id"])]
    short = [n for n in kept_ns if n in cleaning_refused]
    kept = [n for n in kept_ns if n not in cleaning_refused]
    cleaned_refused = pl.concat(
        [
            quarantine_docs(
                raw.filter(pl.col("doc_id") == doc_id(n)).with_columns(pl.lit("").alias("text")),
                stage="cleaned_text",
                day=date.fromisoformat(day),
                reason=cleaning_refused[n],
            )
            for n in short
        ]
        or [quarantine_rows("cleaned_text", day, [])]
    )
    lake.write_quarantine("cleaned_text", day, cleaned_refused, part)
    lake.write("cleaned_text", day, cleaned_frame(kept, day, duplicates), part)
    lake.write("tokens", day, tokens_frame(kept, day), part)
    lake.write("features", day, features_frame(kept, day), part)
    lake.write("predictions", day, predictions_frame(kept, day, duplicates), part)


def _refresh_day(
    lake: Lake,
    day: str,
    ns: list[int],
    duplicates: dict[int, int],
    cleaning_refused: dict[int, str],
    *,
    report_bytes: int,
) -> None:
    kept = [n for n in ns if n not in cleaning_refused]
    predictions = lake.read_day("predictions", day)
    assert sorted(predictions["doc_id"]) == sorted(doc_id(n) for n in kept)
    quarantined = sum(
        lake.read_quarantine(stage, day).height for stage in ("raw_text", "cleaned_text")
    )
    _day_stages(lake, day, predictions, quarantined=quarantined, report_bytes=report_bytes)


def _day_stages(
    lake: Lake, day: str, predictions: pl.DataFrame, *, quarantined: int, report_bytes: int
) -> None:
    lake.write("aggregates", day, aggregates_frame(predictions))
    lake.write("quality", day, quality_frame(predictions, quarantined))
    lake.write("reports", day, reports_frame(day, report_bytes))


# what today's reader returns -----------------------------------------------------------------
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


def tables(root: str | Path) -> list[str]:
    """Every table of the lake: `<asset>` and `quarantine/<stage>` (not `_locks`)."""
    base = Path(root)
    names = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("_")):
        if folder.name == QUARANTINE:
            names += [f"{QUARANTINE}/{p.name}" for p in sorted(folder.iterdir()) if p.is_dir()]
        else:
            names.append(folder.name)
    return names


def expectations(root: str | Path) -> dict[str, Any]:
    """What today's read API returns for every table and day of the lake at `root`: per day its
    generation, part names, rows, digest and sorted doc ids (quarantine: reasons with counts
    instead); per table its columns."""
    lake = Lake(str(root))
    found: dict[str, Any] = {}
    for table in tables(root):
        folder = Path(root) / table
        if (folder / "data.parquet").exists():
            frame = lake.read_part(table, None)
            found[table] = {
                "columns": _columns(frame),
                "rows": frame.height,
                "digest": digest(frame),
            }
            continue
        days: dict[str, Any] = {}
        columns: dict[str, str] = {}
        for day in sorted(p.name for p in folder.iterdir() if p.is_dir()):
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


def write_expectations(root: Path, path: Path) -> None:
    path.write_text(json.dumps(expectations(root), indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the lake into")
    parser.add_argument(
        "--replace", action="store_true", help="remove what --out holds first (a lake fixture)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    if args.replace and out.exists():
        if not (out / "raw_text").is_dir():
            print(f"{out} does not look like a lake fixture: not removing it", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    build(out)
    write_expectations(out, expected_path(out))
    print(f"wrote {out} and {expected_path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
