"""The Kafka message contract, as plain functions: what a valid message is, what a dead letter
carries (headers, key, the DLQ copy, the quarantine row), the landing file's lines, and the
run tags that name a micro-batch's offset range (how the sensor tells the raw stage what to
read). The sensor's planning (cursor, ranges, retries, day refresh) is `planner.py`.

Nothing here talks to a broker or to Dagster: the raw stage gives `split_messages` the records
it consumed; the API validates with `validate_message` too.

Offset ranges are half-open, ``[start, end)``: ``end`` is the next offset after the range, so
``topic:0:0-500`` and ``topic:0:500-1000`` are adjacent and never overlap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl

from nlp_assets.kernels.ingest import (
    TRACEPARENT,
    RecordError,
    normalise_record,
    parse_event_time,
)
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
# A range whose runs failed past the bound is re-requested once more in dead-letter mode: the
# raw stage then sends every message of the range to the dead-letter topic (and the lake
# quarantine) with the failure as the reason, and lands nothing (sensor: TAG_ATTEMPT counts).
TAG_MODE = "nlp/kafka_mode"
MODE_DEAD_LETTER = "dead_letter"
TAG_FAILURE = "nlp/kafka_failure"  # why the range is dead-lettered (the last run's error)
TAG_ATTEMPT = "nlp/kafka_attempt"  # 1 for the first request of a range, 2 for its re-request...
#: TAG_FAILURE holds the first line of the last run's error, cut to this many characters.
FAILURE_TAG_MAX_CHARS = 500

# Headers of a dead letter. Its key is the source coordinates; its value the original bytes,
# cut to fit the broker when they do not (then marked truncated, with the original size).
HEADER_REASON = "nlp.dlq.reason"
HEADER_TOPIC = "nlp.source.topic"
HEADER_PARTITION = "nlp.source.partition"
HEADER_OFFSET = "nlp.source.offset"
HEADER_TRUNCATED = "nlp.dlq.truncated"  # b"1" when the value is a prefix of the original
HEADER_ORIGINAL_BYTES = "nlp.dlq.original_bytes"
# "<lake root>/quarantine/kafka/<day>/<part>#<location>": the lake quarantine part (read it with
# Lake.read_part("quarantine/kafka", day, part)) and the row (`location`) with the whole bytes
HEADER_QUARANTINE = "nlp.dlq.quarantine"
#: W3C trace context of the producer's span (nlp_assets.tracing); kept as the raw row's
#: `traceparent`, and on a dead letter's copy as it came.
HEADER_TRACEPARENT = "traceparent"


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

    @property
    def traceparent(self) -> str | None:
        """The W3C `traceparent` header (the producer's span), if there is a valid one."""
        for name, value in self.headers:
            if name.lower() == HEADER_TRACEPARENT:
                try:
                    text = value.decode("ascii")
                except (UnicodeDecodeError, AttributeError):
                    return None
                return text if TRACEPARENT.fullmatch(text) else None
        return None


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
#: Reasons are cut to this many characters (a quarantine cell and a header, not a log).
REASON_MAX_CHARS = 1_000
#: A dead letter's copy in the DLQ stays under this many bytes (value, key and headers):
#: librdkafka's producer refuses messages over `message.max.bytes` (1,000,000 by default),
#: while its consumer reads larger ones.
DEFAULT_DLQ_MAX_BYTES = 900_000
_RECORD_OVERHEAD_BYTES = 512  # what the Kafka record format adds beyond key, value, headers


def _error_reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:REASON_MAX_CHARS]


def _cut_utf8(text: str, max_bytes: int) -> bytes:
    """At most `max_bytes` of UTF-8, never half a character."""
    return text.encode("utf-8", "replace")[:max_bytes].decode("utf-8", "ignore").encode("utf-8")


def _usable_time(timestamp_ms: int | None) -> bool:
    """A broker timestamp is the producer's to set: an absurd one is ignored, not a reason."""
    try:
        return timestamp_ms is not None and parse_event_time(timestamp_ms) is not None
    except Exception:
        return False


def _landing_line(record: Mapping[str, Any]) -> bytes:
    """One landing line: strict JSON (no NaN/Infinity) in UTF-8 (no lone surrogates)."""
    text = json.dumps(record, ensure_ascii=False, sort_keys=True, allow_nan=False)
    return text.encode("utf-8")


def validate_message(
    value: bytes | None,
    *,
    topic: str,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    coordinates: str | None = None,
    timestamp_ms: int | None = None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """A landing record (JSON object) for a valid message; `MessageError` says why not.

    Contract: a JSON object of at most `max_bytes` bytes (checked before parsing) with `id`
    (string or integer) and `text` (a string the normaliser accepts: not empty or whitespace
    only); optional `source` (default: the topic), `timestamp`, `priority` (integer) and
    `metadata` (object). The record keeps `source` explicitly, so its doc_id (hash of source
    and id) is the same in a micro-batch and in a backfill of the landed file. `coordinates`
    go into `metadata.kafka`; `timestamp_ms` (the broker's) stands in for a missing timestamp.

    Any error while parsing, normalising or serialising (deep nesting, huge integers,
    overflowing dates, lone surrogates...) is the message's reason, naming the error class:
    nothing here fails a range. The record is proven to land: its landing line is built and
    parsed back through the normaliser, as a backfill will.
    """
    if value is not None and len(value) > max_bytes:
        raise MessageError(f"oversized: {len(value)} bytes, limit {max_bytes}")
    if value is None or not value.strip():
        raise MessageError("empty message")
    try:
        record = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError:
        raise MessageError("not valid UTF-8") from None
    except json.JSONDecodeError as error:
        raise MessageError(f"invalid JSON: {error.msg} at column {error.colno}") from None
    except Exception as error:  # RecursionError (nesting), ValueError (int over 4300 digits)
        raise MessageError(_error_reason(error)) from None
    if not isinstance(record, dict):
        raise MessageError(f"message must be a JSON object, got {type(record).__name__}")
    source_id, text = record.get("id"), record.get("text")
    missing = [
        name
        for name, blank in (
            ("id", source_id is None or (isinstance(source_id, str) and not source_id.strip())),
            ("text", text is None),  # an empty or blank text: the normaliser's reason
        )
        if blank
    ]
    if missing:
        raise MessageError(f"missing required field(s): {', '.join(missing)}")
    priority = record.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise MessageError("field 'priority' must be an integer")
    landed = {**record, "source": record.get("source") or topic}
    metadata = record.get("metadata") or {}
    if coordinates is not None and isinstance(metadata, dict):
        landed["metadata"] = {**metadata, "kafka": coordinates}
    if traceparent is not None:  # the message's header: the transport's context wins
        landed["traceparent"] = traceparent
    if landed.get("timestamp") in (None, "") and _usable_time(timestamp_ms):
        landed["timestamp"] = timestamp_ms  # the broker's time, fixed per offset
    try:
        as_landed = json.loads(_landing_line(landed))
    except Exception as error:  # lone surrogates, NaN or Infinity
        raise MessageError(f"record cannot be landed as JSON: {_error_reason(error)}") from None
    try:
        normalise_record(as_landed, default_source=topic)  # what a backfill of the line does
    except RecordError as error:
        raise MessageError(str(error)) from None
    except Exception as error:
        raise MessageError(_error_reason(error)) from None
    return landed


@dataclass(frozen=True)
class SplitMessages:
    records: list[dict[str, Any]]  # valid, as landing records, in offset order
    dead_letters: list[tuple[KafkaRecord, str]]  # (message, reason)


def split_messages(
    messages: Iterable[KafkaRecord], *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> SplitMessages:
    """Valid messages become landing records (Kafka coordinates in `metadata`; the message's
    broker timestamp when it has no `timestamp`); every other one is a dead letter with a
    reason. Never raises for a message: each one is in exactly one of the two lists."""
    records: list[dict[str, Any]] = []
    dead: list[tuple[KafkaRecord, str]] = []
    for message in messages:
        try:
            records.append(
                validate_message(
                    message.value,
                    topic=message.topic,
                    max_bytes=max_bytes,
                    coordinates=message.coordinates,
                    timestamp_ms=message.timestamp_ms,
                    traceparent=message.traceparent,
                )
            )
        except Exception as error:  # a MessageError, or anything validation did not foresee
            reason = str(error) if isinstance(error, MessageError) else _error_reason(error)
            dead.append((message, reason or type(error).__name__))
    return SplitMessages(records=records, dead_letters=dead)


def landing_jsonl(records: Iterable[Mapping[str, Any]]) -> bytes:
    """JSON Lines of records that passed `validate_message` (which proved each one lands)."""
    return b"".join(_landing_line(r) + b"\n" for r in records)


def dead_letter_mode_reason(tags: Mapping[str, str]) -> str | None:
    """The reason every message of a run's range gets in dead-letter mode (`TAG_MODE`), or None
    for an ordinary run. The dead-letter run is attempt N + 1 of its range (`TAG_ATTEMPT`)."""
    if tags.get(TAG_MODE) != MODE_DEAD_LETTER:
        return None
    attempt = tags.get(TAG_ATTEMPT, "")
    after = f"after {int(attempt) - 1} attempts" if attempt.isdigit() else "repeatedly"
    failure = tags.get(TAG_FAILURE) or "no failure recorded"
    return f"range failed {after}: {failure}"[:REASON_MAX_CHARS]


def dead_letter_headers(message: KafkaRecord, reason: str) -> list[tuple[str, bytes]]:
    return [
        (HEADER_REASON, _cut_utf8(reason, REASON_MAX_CHARS)),
        (HEADER_TOPIC, message.topic.encode("utf-8")),
        (HEADER_PARTITION, str(message.partition).encode()),
        (HEADER_OFFSET, str(message.offset).encode()),
        *([(HEADER_TRACEPARENT, message.traceparent.encode())] if message.traceparent else []),
    ]


def dead_letter_key(message: KafkaRecord) -> bytes:
    """Source coordinates: a re-sent dead letter (raw stage retried) carries the same key."""
    return message.coordinates.encode("utf-8")


@dataclass(frozen=True)
class DeadLetter:
    """What goes to the dead-letter topic for one message."""

    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter_message(
    message: KafkaRecord,
    reason: str,
    *,
    max_bytes: int = DEFAULT_DLQ_MAX_BYTES,
    quarantine: str | None = None,
) -> DeadLetter:
    """The DLQ copy of a dead letter: key, value and headers within `max_bytes`, so the broker
    takes it whatever arrived. A value that does not fit is cut and marked (`HEADER_TRUNCATED`,
    `HEADER_ORIGINAL_BYTES`); `quarantine` (the lake quarantine part holding the whole bytes)
    goes into `HEADER_QUARANTINE` as ``<part>#<location>``."""
    headers = dead_letter_headers(message, reason)
    if quarantine:
        headers.append((HEADER_QUARANTINE, f"{quarantine}#{message.coordinates}".encode()))
    key = dead_letter_key(message)

    def room() -> int:
        used = len(key) + sum(len(k) + len(v) for k, v in headers)
        return max(0, max_bytes - _RECORD_OVERHEAD_BYTES - used)

    value = message.value
    if value is not None and len(value) > room():
        headers += [(HEADER_TRUNCATED, b"1"), (HEADER_ORIGINAL_BYTES, str(len(value)).encode())]
        value = value[: room()]
    return DeadLetter(key=key, value=value, headers=headers)


def dead_letter_frame(
    dead_letters: list[tuple[KafkaRecord, str]], *, day: date, landing_file: str
) -> pl.DataFrame:
    """Dead letters as quarantine rows (`location` = topic/partition/offset) with the bytes as
    they arrived in `raw` (up to `RAW_MAX_BYTES`; `raw_size` their full size)."""
    rows = [
        {
            "stage": DLQ_STAGE,
            "ingest_date": day,
            "file": landing_file,
            "location": message.coordinates,
            "reason": reason,
            "raw": message.value,
        }
        for message, reason in dead_letters
    ]
    return quarantine_frame(rows).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def failure_tag(error: str) -> str:
    """The TAG_FAILURE value: the error's first non-empty line, at most FAILURE_TAG_MAX_CHARS."""
    line = next((line.strip() for line in error.splitlines() if line.strip()), "unknown error")
    if len(line) > FAILURE_TAG_MAX_CHARS:
        line = line[: FAILURE_TAG_MAX_CHARS - 3] + "..."
    return line
