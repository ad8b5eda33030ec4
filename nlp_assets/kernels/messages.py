"""Kafka messages and offset ranges: validation and range planning as plain functions.

Nothing here talks to a broker or to Dagster: the sensor gives `plan_ranges` the watermarks it
read, the raw stage gives `split_messages` the records it consumed.

Offset ranges are half-open, ``[start, end)``: ``end`` is the next offset after the range, so
``topic:0:0-500`` and ``topic:0:500-1000`` are adjacent and never overlap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import polars as pl

from nlp_assets.kernels.ingest import RecordError, normalise_record
from nlp_assets.kernels.quarantine import QUARANTINE_SCHEMA, quarantine_frame

#: Sub-folder of a landing day holding what Kafka micro-batches consumed (one file per range).
KAFKA_LANDING_DIR = "kafka"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
REQUIRED_FIELDS = ("id", "text")
DLQ_STAGE = "kafka"

# Run tags of a Kafka micro-batch (the part tag itself is resources.lake.PART_TAG).
TAG_TOPIC = "nlp/kafka_topic"
TAG_PARTITION = "nlp/kafka_partition"
TAG_START = "nlp/kafka_start"
TAG_END = "nlp/kafka_end"
TAG_GENERATION = "nlp/kafka_generation"

# Headers of a dead letter (the original key and value are kept as they were).
HEADER_REASON = "nlp.dlq.reason"
HEADER_TOPIC = "nlp.source.topic"
HEADER_PARTITION = "nlp.source.partition"
HEADER_OFFSET = "nlp.source.offset"

ResetPolicy = Literal["restart", "halt"]


class MessageError(ValueError):
    """A message that breaks the contract; its text is the dead-letter reason."""


@dataclass(frozen=True)
class KafkaRecord:
    """One consumed message, as the raw stage sees it (no client types)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def coordinates(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    start: int
    end: int  # exclusive
    generation: int = 0  # bumped each time the topic is found recreated

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"empty or negative offset range [{self.start}, {self.end})")

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def run_key(self) -> str:
        key = f"{self.topic}:{self.partition}:{self.start}-{self.end}"
        return f"{key}:g{self.generation}" if self.generation else key

    @property
    def part(self) -> str:
        """Lake part and landing file name (letters, digits and . _ - only)."""
        name = f"kafka-{self.topic}-p{self.partition}-{self.start}-{self.end}"
        return f"{name}-g{self.generation}" if self.generation else name

    def tags(self) -> dict[str, str]:
        return {
            TAG_TOPIC: self.topic,
            TAG_PARTITION: str(self.partition),
            TAG_START: str(self.start),
            TAG_END: str(self.end),
            TAG_GENERATION: str(self.generation),
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> OffsetRange | None:
        """The range a run covers, or None for a run that is not a Kafka micro-batch."""
        if TAG_TOPIC not in tags:
            return None
        try:
            return cls(
                topic=tags[TAG_TOPIC],
                partition=int(tags[TAG_PARTITION]),
                start=int(tags[TAG_START]),
                end=int(tags[TAG_END]),
                generation=int(tags.get(TAG_GENERATION, "0")),
            )
        except (KeyError, ValueError) as error:
            raise ValueError(f"incomplete or invalid Kafka range tags: {error}") from None


# validation ----------------------------------------------------------------------------------
def validate_message(
    value: bytes | None, *, topic: str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> dict[str, Any]:
    """A landing record (JSON object) for a valid message; `MessageError` says why not.

    Contract: a JSON object of at most `max_bytes` bytes with `id` (string or integer) and
    `text` (string); optional `source` (default: the topic), `timestamp`, `priority` (integer)
    and `metadata` (object). The record keeps `source` explicitly, so its doc_id (hash of source
    and id) is the same in a micro-batch and in a backfill of the landed file.
    """
    if value is None or not value.strip():
        raise MessageError("empty message")
    if len(value) > max_bytes:
        raise MessageError(f"oversized: {len(value)} bytes, limit {max_bytes}")
    try:
        record = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError:
        raise MessageError("not valid UTF-8") from None
    except json.JSONDecodeError as error:
        raise MessageError(f"invalid JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(record, dict):
        raise MessageError(f"message must be a JSON object, got {type(record).__name__}")
    missing = [name for name in REQUIRED_FIELDS if record.get(name) in (None, "")]
    if missing:
        raise MessageError(f"missing required field(s): {', '.join(missing)}")
    priority = record.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise MessageError("field 'priority' must be an integer")
    landed = {**record, "source": record.get("source") or topic}
    try:
        normalise_record(landed, default_source=topic)  # the rules a backfill will apply
    except RecordError as error:
        raise MessageError(str(error)) from None
    return landed


@dataclass(frozen=True)
class SplitMessages:
    records: list[dict[str, Any]]  # valid, as landing records, in offset order
    dead_letters: list[tuple[KafkaRecord, str]]  # (message, reason)


def split_messages(
    messages: Iterable[KafkaRecord], *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> SplitMessages:
    """Valid messages become landing records (Kafka coordinates in `metadata`; the message's
    broker timestamp when it has no `timestamp`)."""
    records: list[dict[str, Any]] = []
    dead: list[tuple[KafkaRecord, str]] = []
    for message in messages:
        try:
            record = validate_message(message.value, topic=message.topic, max_bytes=max_bytes)
        except MessageError as error:
            dead.append((message, str(error)))
            continue
        metadata = record.get("metadata") or {}
        record["metadata"] = {**metadata, "kafka": message.coordinates}
        if record.get("timestamp") in (None, "") and message.timestamp_ms is not None:
            record["timestamp"] = message.timestamp_ms  # the broker's time, fixed per offset
        records.append(record)
    return SplitMessages(records=records, dead_letters=dead)


def landing_jsonl(records: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(
        json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records
    ).encode("utf-8")


def dead_letter_headers(message: KafkaRecord, reason: str) -> list[tuple[str, bytes]]:
    return [
        (HEADER_REASON, reason.encode("utf-8")),
        (HEADER_TOPIC, message.topic.encode("utf-8")),
        (HEADER_PARTITION, str(message.partition).encode()),
        (HEADER_OFFSET, str(message.offset).encode()),
    ]


def dead_letter_key(message: KafkaRecord) -> bytes:
    """Source coordinates: a re-sent dead letter (raw stage retried) carries the same key."""
    return message.coordinates.encode("utf-8")


def dead_letter_frame(
    dead_letters: list[tuple[KafkaRecord, str]], *, day: date, landing_file: str
) -> pl.DataFrame:
    """Dead letters as quarantine rows (`location` = topic/partition/offset)."""
    rows = [
        {
            "stage": DLQ_STAGE,
            "ingest_date": day,
            "file": landing_file,
            "location": message.coordinates,
            "reason": reason,
            "payload": None
            if message.value is None
            else message.value.decode("utf-8", errors="replace"),
        }
        for message, reason in dead_letters
    ]
    return quarantine_frame(rows).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


# range planning (the sensor) -----------------------------------------------------------------
@dataclass(frozen=True)
class TopicCursor:
    """What a topic's sensor remembers: the next offset per partition, and the generation."""

    offsets: dict[int, int] = field(default_factory=dict)
    generation: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "generation": self.generation,
                "offsets": {str(p): o for p, o in self.offsets.items()},
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> TopicCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            offsets={int(p): int(o) for p, o in data.get("offsets", {}).items()},
            generation=int(data.get("generation", 0)),
        )


@dataclass(frozen=True)
class RangePlan:
    ranges: list[OffsetRange]
    cursor: TopicCursor
    lag: dict[int, int]  # high watermark minus the new cursor, per partition
    notes: list[str]  # what an operator should know (new partitions, resets, expiry)
    halted: str | None = None  # why nothing was planned (reset policy "halt")

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


def plan_ranges(
    topic: str,
    cursor: TopicCursor,
    watermarks: Mapping[int, tuple[int, int]],
    *,
    max_messages_per_run: int,
    max_runs: int,
    on_reset: ResetPolicy = "restart",
) -> RangePlan:
    """Bounded ranges from the cursor up to the high watermarks, fairly across partitions.

    - A partition not in the cursor is new: read from its low watermark.
    - A cursor below the low watermark: the messages in between expired before they were read;
      start at the low watermark and say how many were lost.
    - A cursor beyond the high watermark, or a partition that vanished, means the topic was
      recreated (or truncated). Policy "restart": a new generation reads every partition from
      its low watermark (run keys and parts carry the generation, so they never collide with
      the old topic's); "halt": plan nothing and keep the cursor until an operator resets it.
    """
    if max_messages_per_run < 1 or max_runs < 0:
        raise ValueError("max_messages_per_run must be >= 1 and max_runs >= 0")
    notes: list[str] = []
    offsets = dict(cursor.offsets)
    generation = cursor.generation
    beyond = {p: o for p, o in offsets.items() if p in watermarks and o > watermarks[p][1]}
    vanished = sorted(p for p in offsets if p not in watermarks)
    if beyond or vanished:
        what = ", ".join(
            [
                f"partition {p}: cursor {o} > high watermark {watermarks[p][1]}"
                for p, o in beyond.items()
            ]
            + [f"partition {p} no longer exists" for p in vanished]
        )
        if on_reset == "halt":
            reason = (
                f"topic {topic} looks recreated ({what}); policy 'halt': nothing read until "
                "the sensor cursor is reset"
            )
            lag = {p: max(0, hw - offsets.get(p, lw)) for p, (lw, hw) in watermarks.items()}
            return RangePlan([], cursor, lag, [reason], halted=reason)
        generation += 1
        notes.append(
            f"topic {topic} looks recreated ({what}); policy 'restart': generation "
            f"{generation} reads every partition from its low watermark"
        )
        offsets = {}
    for partition, (low, _high) in sorted(watermarks.items()):
        if partition not in offsets:
            if cursor.offsets and generation == cursor.generation:
                notes.append(f"new partition {topic}/{partition}: reading from offset {low}")
            offsets[partition] = low
        elif offsets[partition] < low:
            notes.append(
                f"{topic}/{partition}: {low - offsets[partition]} messages expired before they "
                f"were read (cursor {offsets[partition]}, low watermark {low})"
            )
            offsets[partition] = low

    ranges: list[OffsetRange] = []
    pending = True
    while pending and len(ranges) < max_runs:
        pending = False
        for partition, (_low, high) in sorted(watermarks.items()):
            if len(ranges) == max_runs:
                break
            start = offsets[partition]
            if start >= high:
                continue
            end = min(high, start + max_messages_per_run)
            ranges.append(OffsetRange(topic, partition, start, end, generation))
            offsets[partition] = end
            pending = True
    lag = {p: max(0, high - offsets[p]) for p, (_low, high) in watermarks.items()}
    return RangePlan(ranges, TopicCursor(offsets, generation), lag, notes)
