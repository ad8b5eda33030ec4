"""The Kafka path of the raw stage: one offset range in, one landed file and one part out.

1. read exactly [start, end) of one partition (assign + seek; no consumer group);
2. validate each message; dead letters go to `<topic>.dlq` (reason and source coordinates in
   headers) and to the lake under `quarantine/kafka/<day>/<part>.parquet`;
3. land the valid ones as `<landing>/<day>/kafka/<part>.jsonl` (atomic), so a backfill of the
   day reads them from the landing folder without the broker;
4. parse that file with the landing reader (same doc_ids as a backfill), and quarantine
   doc_ids already present in another part of the day (a producer re-sent the message).

A retried run repeats every step for the same range: the file, the part and the quarantine
part are overwritten, not added to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import polars as pl

from nlp_assets.kernels.ingest import read_landing_files
from nlp_assets.kernels.messages import (
    DLQ_STAGE,
    KAFKA_LANDING_DIR,
    OffsetRange,
    dead_letter_frame,
    landing_jsonl,
    split_messages,
)
from nlp_assets.kernels.quarantine import QUARANTINE_SCHEMA
from resources.folders import DayFolder
from resources.kafka import KafkaResource
from resources.lake import PART_TAG, LakeResource

RAW_ASSET = "raw_text"


@dataclass(frozen=True)
class KafkaBatch:
    docs: pl.DataFrame
    quarantine: pl.DataFrame
    metadata: dict[str, Any]


def _write_atomic(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def cross_part_duplicates(docs: pl.DataFrame, other_ids: set[str]) -> pl.Series:
    """True where a document's id is already in another part of the day."""
    return docs["doc_id"].is_in(list(other_ids))


def read_kafka_range(
    context: dg.AssetExecutionContext,
    offsets: OffsetRange,
    *,
    kafka: KafkaResource,
    landing: DayFolder,
    lake: LakeResource,
) -> KafkaBatch:
    day_key = context.partition_key
    day = date.fromisoformat(day_key)
    if context.run.tags.get(PART_TAG) != offsets.part:
        raise dg.Failure(
            allow_retries=False,
            description=f"run tags name part {context.run.tags.get(PART_TAG)!r} but the "
            f"Kafka range {offsets.run_key} writes part {offsets.part!r}",
        )
    messages = kafka.read_range(offsets)
    split = split_messages(messages, max_bytes=kafka.max_message_bytes)

    landing_file = landing.day_dir(day_key) / KAFKA_LANDING_DIR / f"{offsets.part}.jsonl"
    relative = landing_file.relative_to(landing.path).as_posix()
    sent = kafka.send_dead_letters(split.dead_letters)
    the_lake = lake.lake()
    dead = dead_letter_frame(split.dead_letters, day=day, landing_file=relative)
    the_lake.write_quarantine(DLQ_STAGE, day_key, dead, offsets.part)
    _write_atomic(landing_file, landing_jsonl(split.records))

    parsed = read_landing_files([landing_file], day=day, root=landing.path)
    other_ids: set[str] = set()
    for path in the_lake.parts(RAW_ASSET, day_key):
        if path.stem != offsets.part:
            with path.open("rb") as handle:
                other_ids |= set(pl.read_parquet(handle, columns=["doc_id"])["doc_id"])
    repeated = cross_part_duplicates(parsed.docs, other_ids)
    docs = parsed.docs.filter(~repeated)
    duplicates = parsed.docs.filter(repeated).select(
        pl.lit(RAW_ASSET).alias("stage"),
        pl.col("ingest_date"),
        pl.col("doc_id"),
        pl.col("file"),
        pl.lit(None, pl.String).alias("location"),
        pl.lit("duplicate doc_id: already in another part of the day").alias("reason"),
        pl.col("text").alias("payload"),
    )
    quarantine = pl.concat(
        [parsed.quarantine.cast(QUARANTINE_SCHEMA), duplicates.cast(QUARANTINE_SCHEMA)]  # type: ignore[arg-type]
    )
    if len(messages) != offsets.size:
        context.log.info(
            f"{offsets.run_key}: {offsets.size - len(messages)} offsets held no message "
            "(compaction or transaction markers)"
        )
    return KafkaBatch(
        docs=docs,
        quarantine=quarantine,
        metadata={
            "kafka_range": offsets.run_key,
            "messages": len(messages),
            "dlq_messages": sent,
            "dlq_topic": kafka.dead_letter_topic(offsets.topic),
            "duplicates_across_parts": duplicates.height,
            "landing_file": dg.MetadataValue.path(str(landing_file)),
        },
    )
