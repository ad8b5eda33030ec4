"""The Kafka path of the raw stage: one offset range in, one landed file and one part out.

1. read exactly [start, end) of one partition (assign + seek; no consumer group);
2. validate each message; dead letters go first to the lake's table `quarantine/kafka`, the
   range's part of the day (whole bytes in `raw`), then to `<topic>.dlq` as a copy that fits
   the broker (reason, source coordinates and that quarantine row in headers; cut and marked
   when too large). Dead letters never fail the range: a DLQ the broker refuses or cannot be
   reached is a warning and `dlq_unsent` in the metadata;
3. land the valid ones as `<landing>/<day>/kafka/<part>.jsonl` (atomic), so a backfill of the
   day reads them from the landing folder without the broker;
4. parse that file with the landing reader (same doc_ids as a backfill), and quarantine
   doc_ids already present in another part of the day (a producer re-sent the message), found
   through `Lake.read_day_columns` (one column of one table version).

A retried run repeats every step for the same range: the file, the part and the quarantine
part are overwritten, not added to. In dead-letter mode (`TAG_MODE`, a range whose runs kept
failing) every message of the range is a dead letter with the failure as its reason and the
landed file is empty, so the run's later stages process an empty part.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import polars as pl
from opentelemetry.trace import SpanKind

from nlp_assets import tracing
from nlp_assets.atomic import write_atomic
from nlp_assets.kafka.messages import (
    DLQ_STAGE,
    KAFKA_LANDING_DIR,
    OffsetRange,
    SplitMessages,
    dead_letter_frame,
    dead_letter_mode_reason,
    landing_jsonl,
    split_messages,
)
from nlp_assets.kafka.resource import DeadLetterDelivery, KafkaResource
from nlp_assets.kernels.ingest import read_landing_files
from nlp_assets.kernels.quarantine import QUARANTINE_SCHEMA, quarantine_docs
from nlp_assets.lake import QUARANTINE
from nlp_assets.resources.folders import DayFolder
from nlp_assets.resources.lake import PART_TAG, LakeResource, kafka_transaction

RAW_ASSET = "raw_text"


@dataclass(frozen=True)
class KafkaBatch:
    docs: pl.DataFrame
    quarantine: pl.DataFrame
    metadata: dict[str, Any]


def cross_part_duplicates(docs: pl.DataFrame, other_ids: pl.Series) -> pl.Series:
    """True where a document's id is already in another part of the day."""
    return docs["doc_id"].is_in(other_ids.implode())


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
    with tracing.span(
        "kafka read",
        {
            "messaging.system": "kafka",
            "messaging.destination.name": offsets.topic,
            "messaging.destination.partition.id": str(offsets.partition),
            "nlp.kafka_range": offsets.run_key,
        },
        kind=SpanKind.CONSUMER,
    ) as span:
        messages = kafka.read_range(offsets)
        span.set_attribute("messaging.batch.message_count", len(messages))
    dlq_topic = kafka.dead_letter_topic(offsets.topic)
    failed_range = dead_letter_mode_reason(context.run.tags)
    if failed_range is None:
        split = split_messages(messages, max_bytes=kafka.max_message_bytes)
    else:
        split = SplitMessages(records=[], dead_letters=[(m, failed_range) for m in messages])
        context.log.warning(
            f"{offsets.run_key}: dead-letter mode, all {len(messages)} messages go to "
            f"{dlq_topic} and the lake quarantine: {failed_range}"
        )

    landing_file = landing.day_dir(day_key) / KAFKA_LANDING_DIR / f"{offsets.part}.jsonl"
    relative = landing_file.relative_to(landing.path).as_posix()
    the_lake = lake.lake()
    dead = dead_letter_frame(split.dead_letters, day=day, landing_file=relative)
    # A zombie or replayed run of a range whose raw part is already committed: every table
    # refuses its commits (the range's Delta app transaction), and the attempt that committed
    # sent the dead letters before it, so they are not sent again.
    txn = kafka_transaction(context.run.tags)
    committed = (
        txn is not None and (the_lake.transaction_version(RAW_ASSET, txn[1]) or -1) >= txn[2]
    )
    the_lake.write_quarantine(DLQ_STAGE, day_key, dead, offsets.part)  # first: whole bytes
    # the table, day and part (not a file: a retry or compaction replaces it), as
    # Lake.read_part("quarantine/kafka", day, part) reads it
    table = the_lake.table_uri(f"{QUARANTINE}/{DLQ_STAGE}")
    kept = f"{table}?ingest_date={day_key}&part={offsets.part}"
    delivery = DeadLetterDelivery(sent=0, unsent=0, errors=[])
    if not committed and split.dead_letters:
        with tracing.span(
            "kafka dead letters",
            {
                "messaging.system": "kafka",
                "messaging.destination.name": dlq_topic,
                "messaging.batch.message_count": len(split.dead_letters),
            },
            kind=SpanKind.PRODUCER,
        ) as span:
            delivery = kafka.send_dead_letters(split.dead_letters, quarantine=kept)
            span.set_attribute("nlp.dlq_unsent", delivery.unsent)
    if committed:
        context.log.info(f"{offsets.run_key}: already committed to the lake; nothing is written")
    if delivery.unsent:
        context.log.warning(
            f"{offsets.run_key}: {delivery.unsent} of {len(split.dead_letters)} dead letters "
            f"not sent to {dlq_topic} (the lake quarantine {kept} holds them): "
            + "; ".join(delivery.errors)
        )
    write_atomic(landing_file, landing_jsonl(split.records))

    parsed = read_landing_files([landing_file], day=day, root=landing.path)
    # one table version of the day, the doc_id column only
    other_ids = the_lake.read_day_columns(
        RAW_ASSET, day_key, ["doc_id"], exclude_parts=[offsets.part]
    )["doc_id"]
    repeated = cross_part_duplicates(parsed.docs, other_ids)
    docs = parsed.docs.filter(~repeated)
    duplicates = quarantine_docs(
        parsed.docs.filter(repeated),
        stage=RAW_ASSET,
        day=day,
        reason="duplicate doc_id: already in another part of the day",
    )
    quarantine = (
        pl.concat([parsed.quarantine, duplicates], how="diagonal_relaxed")
        .select(list(QUARANTINE_SCHEMA))
        .cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
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
            "dead_letters": len(split.dead_letters),
            "dlq_messages": delivery.sent,
            "dlq_unsent": delivery.unsent,
            "dlq_topic": dlq_topic,
            "dead_letter_mode": failed_range is not None,
            "range_already_committed": committed,
            "duplicates_across_parts": duplicates.height,
            "landing_file": dg.MetadataValue.path(str(landing_file)),
        },
    )
