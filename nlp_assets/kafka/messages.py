"""Kafka messages and offset ranges: validation and range planning as plain functions.

Nothing here talks to a broker or to Dagster: the sensor gives `plan_ranges` the watermarks it
read, the raw stage gives `split_messages` the records it consumed.

Offset ranges are half-open, ``[start, end)``: ``end`` is the next offset after the range, so
``topic:0:0-500`` and ``topic:0:500-1000`` are adjacent and never overlap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal

import polars as pl

from nlp_assets.kernels.ingest import RecordError, normalise_record, parse_event_time
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


# range planning (the sensor) -----------------------------------------------------------------
#: The longest wait between two requests of a failed range (the backoff doubles up to this).
MAX_RETRY_BACKOFF_SECONDS = 3600.0
#: A failed run Dagster marked for retry (`dagster/will_retry`) whose retry has not appeared
#: after this long counts as failed for good (the daemon's run retries may be off).
RETRY_PENDING_GRACE_SECONDS = 600.0
#: A requested range with no run after this long is requested again under the same run key:
#: Dagster launches a run key once, so this only fills in a run that was never created.
NO_RUN_GRACE_SECONDS = 300.0
#: TAG_FAILURE holds the first line of the last run's error, cut to this many characters.
FAILURE_TAG_MAX_CHARS = 500

RunState = Literal["succeeded", "running", "retrying", "failed"]


@dataclass(frozen=True)
class Outstanding:
    """A requested range not yet known to have succeeded: what the cursor keeps of it.

    Attempt 1 is the first request; each attempt after a run of the previous one failed for
    good has its own run key (``...:a2``) and the same part. An attempt past the sensor's
    bound is a dead-letter request (see TAG_MODE).
    """

    range: OffsetRange
    attempt: int = 1
    requested_at: float = 0.0  # unix seconds of the latest request of this attempt
    failed_run: str | None = None  # the failed run that made this attempt (None for attempt 1)
    day: str | None = None  # the partition of its first request: every attempt lands there

    @property
    def run_key(self) -> str:
        key = self.range.run_key
        return key if self.attempt == 1 else f"{key}:a{self.attempt}"

    def dead_letter(self, max_attempts: int) -> bool:
        return self.attempt > max_attempts

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.range.topic,
            "partition": self.range.partition,
            "start": self.range.start,
            "end": self.range.end,
            "generation": self.range.generation,
            "attempt": self.attempt,
            "requested_at": self.requested_at,
            "failed_run": self.failed_run,
            "day": self.day,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outstanding:
        return cls(
            range=OffsetRange(
                str(data["topic"]),
                int(data["partition"]),
                int(data["start"]),
                int(data["end"]),
                int(data.get("generation", 0)),
            ),
            attempt=int(data.get("attempt", 1)),
            requested_at=float(data.get("requested_at", 0.0)),
            failed_run=data.get("failed_run"),
            day=data.get("day"),
        )


@dataclass(frozen=True)
class RangeRun:
    """One run of a range as the sensor found it in the instance (no Dagster types)."""

    run_id: str
    state: RunState  # "retrying": failed, and Dagster will launch a retry of it
    attempt: int  # the run's TAG_ATTEMPT (1 when absent: a run from before the tag existed)
    created_at: float
    ended_at: float | None = None


@dataclass(frozen=True)
class TopicCursor:
    """What a topic's sensor remembers: the next offset per partition, the generation, the
    topic's identity (Kafka topic id, when the broker tells it) and the ranges requested but not
    yet known to have succeeded, and when it last asked for each day's day stages (see
    `plan_day_refresh`). Old cursors (offsets and generation only) still load."""

    offsets: dict[int, int] = field(default_factory=dict)
    generation: int = 0
    topic_id: str | None = None
    outstanding: tuple[Outstanding, ...] = ()
    day_refreshed: dict[str, float] = field(default_factory=dict)
    days_stale: tuple[str, ...] = ()

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "generation": self.generation,
            "offsets": {str(p): o for p, o in self.offsets.items()},
        }
        if self.outstanding:  # absent when empty: such a cursor reads as before
            data["outstanding"] = [o.to_dict() for o in self.outstanding]
        if self.topic_id is not None:
            data["topic_id"] = self.topic_id
        if self.day_refreshed:
            data["day_refreshed"] = self.day_refreshed
        if self.days_stale:
            data["days_stale"] = list(self.days_stale)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> TopicCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            offsets={int(p): int(o) for p, o in data.get("offsets", {}).items()},
            generation=int(data.get("generation", 0)),
            topic_id=data.get("topic_id"),
            outstanding=tuple(Outstanding.from_dict(o) for o in data.get("outstanding", [])),
            day_refreshed={str(d): float(t) for d, t in data.get("day_refreshed", {}).items()},
            days_stale=tuple(str(d) for d in data.get("days_stale", [])),
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
    topic_id: str | None = None,
) -> RangePlan:
    """Bounded ranges from the cursor up to the high watermarks, fairly across partitions.

    - A partition not in the cursor is new: read from its low watermark.
    - A cursor below the low watermark: the messages in between expired before they were read;
      start at the low watermark and say how many were lost.
    - The topic was recreated (deleted and created again) when its id differs from the one in
      the cursor, or (brokers that tell no id) when a cursor is beyond the high watermark or a
      partition vanished. Policy "restart": a new generation reads every partition from its low
      watermark (run keys and parts carry the generation, so they never collide with the old
      topic's) and forgets the old topic's outstanding ranges (their messages are gone); "halt":
      plan nothing and keep the cursor until an operator resets it.

    `topic_id` must be read before the watermarks: a topic recreated in between is then found
    by the next tick (its ranges read twice, never skipped).
    """
    if max_messages_per_run < 1 or max_runs < 0:
        raise ValueError("max_messages_per_run must be >= 1 and max_runs >= 0")
    notes: list[str] = []
    offsets = dict(cursor.offsets)
    generation = cursor.generation
    outstanding = cursor.outstanding
    beyond = {p: o for p, o in offsets.items() if p in watermarks and o > watermarks[p][1]}
    vanished = sorted(p for p in offsets if p not in watermarks)
    new_id = cursor.topic_id is not None and topic_id is not None and topic_id != cursor.topic_id
    if new_id or beyond or vanished:
        what = ", ".join(
            ([f"topic id {cursor.topic_id} is now {topic_id}"] if new_id else [])
            + [
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
        if outstanding:
            notes.append(
                f"{len(outstanding)} outstanding range(s) of the old topic dropped, their "
                f"messages were deleted with it: {', '.join(o.run_key for o in outstanding)}"
            )
        offsets, outstanding = {}, ()
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
    new_cursor = TopicCursor(
        offsets,
        generation,
        topic_id or cursor.topic_id,
        outstanding,
        cursor.day_refreshed,
        cursor.days_stale,
    )
    return RangePlan(ranges, new_cursor, lag, notes)


# failed ranges (the sensor) ------------------------------------------------------------------
@dataclass(frozen=True)
class TroubledRange:
    """A range that failed and has not succeeded since (listed, alerted, counted in the lag)."""

    outstanding: Outstanding  # as the cursor keeps it after this tick
    state: str  # what happens next, in words
    run_id: str | None  # its last failed run (None: no run was ever found)
    failed_at: float | None = None
    retry_at: float | None = None  # when it is requested again (None: requested now/running)

    def as_metadata(self, max_attempts: int) -> dict[str, Any]:
        return {
            "run_key": self.outstanding.run_key,
            "attempt": self.outstanding.attempt,
            "next_attempt": self.outstanding.attempt + 1 if self.retry_at else None,
            "dead_letter_mode": self.outstanding.dead_letter(max_attempts),
            "state": self.state,
            "run_id": self.run_id,
            "failed_at": self.failed_at,
            "retry_at": self.retry_at,
            "messages": self.outstanding.range.size,
        }


@dataclass(frozen=True)
class TickPlan:
    requests: list[Outstanding]  # to request now: re-requests first, then new ranges
    cursor: TopicCursor
    lag: dict[int, int]  # per partition: not yet requested + ranges that failed
    in_flight: int  # messages of ranges requested and not failed (runs queued or running)
    troubled: list[TroubledRange]
    notes: list[str]
    halted: str | None = None

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


def retry_backoff(attempt: int, backoff_s: float) -> float:
    """Seconds between the failure of `attempt` and the next request: doubling, capped."""
    return min(backoff_s * 2 ** (attempt - 1), MAX_RETRY_BACKOFF_SECONDS)


def plan_tick(
    topic: str,
    cursor: TopicCursor,
    watermarks: Mapping[int, tuple[int, int]],
    runs: Mapping[str, list[RangeRun]],
    *,
    now: float,
    max_messages_per_run: int,
    max_runs: int,
    max_outstanding: int,
    max_attempts: int,
    backoff_s: float,
    on_reset: ResetPolicy = "restart",
    topic_id: str | None = None,
    day: str | None = None,
) -> TickPlan:
    """One sensor tick: settle the outstanding ranges with their runs (by part), then plan new
    ranges while fewer than `max_outstanding` are outstanding; at most `max_runs` requests.

    A range is done when any run of it succeeded. Otherwise the newest run of its current
    attempt decides: queued or running, or failed with a Dagster retry coming -> wait; failed
    for good (or cancelled) -> after `retry_backoff` from its end, the next attempt; attempts
    past `max_attempts` are dead-letter requests, repeated with backoff until one succeeds.
    No run at all after NO_RUN_GRACE_SECONDS -> requested again under the same run key.
    New ranges belong to `day`; every later attempt of a range keeps the day of its first.
    """
    if max_attempts < 1 or max_outstanding < 1:
        raise ValueError("max_attempts and max_outstanding must be >= 1")
    notes: list[str] = []
    kept: list[Outstanding] = []
    requests: list[Outstanding] = []
    troubled: list[TroubledRange] = []
    for entry in cursor.outstanding:
        of_range = runs.get(entry.range.part, [])
        if any(run.state == "succeeded" for run in of_range):
            continue
        mine = sorted(
            (run for run in of_range if run.attempt == entry.attempt),
            key=lambda run: run.created_at,
            reverse=True,
        )
        budget = len(requests) < max_runs
        if not mine:
            if now - entry.requested_at < NO_RUN_GRACE_SECONDS:
                kept.append(entry)  # the daemon has not created its run yet
                if entry.attempt > 1:
                    troubled.append(
                        TroubledRange(entry, f"attempt {entry.attempt} requested", entry.failed_run)
                    )
                continue
            again = replace(entry, requested_at=now) if budget else entry
            if budget:
                requests.append(again)
            kept.append(again)
            troubled.append(
                TroubledRange(
                    again,
                    f"no run found {now - entry.requested_at:.0f} s after its request: "
                    + ("requested again" if budget else "waiting for room in a tick"),
                    entry.failed_run,
                )
            )
            continue
        newest = mine[0]
        ended = newest.ended_at if newest.ended_at is not None else newest.created_at
        waiting_retry = newest.state == "retrying" and now - ended < RETRY_PENDING_GRACE_SECONDS
        if newest.state == "running" or waiting_retry:
            kept.append(entry)
            if entry.attempt > 1:
                troubled.append(
                    TroubledRange(entry, f"attempt {entry.attempt} running", entry.failed_run)
                )
            continue
        retry_at = ended + retry_backoff(entry.attempt, backoff_s)
        if now >= retry_at and budget:
            following = Outstanding(
                entry.range, entry.attempt + 1, now, newest.run_id, day=entry.day
            )
            requests.append(following)
            kept.append(following)
            mode = "dead-letter mode" if following.dead_letter(max_attempts) else "re-requested"
            troubled.append(
                TroubledRange(
                    following, f"attempt {following.attempt} {mode}", newest.run_id, ended
                )
            )
            continue
        kept.append(entry)
        following_mode = (
            "in dead-letter mode" if entry.attempt + 1 > max_attempts else "re-requested"
        )
        troubled.append(
            TroubledRange(
                entry,
                f"failed: attempt {entry.attempt + 1} {following_mode} after the backoff",
                newest.run_id,
                ended,
                max(retry_at, now),
            )
        )

    room = min(max_runs - len(requests), max_outstanding - len(kept))
    if len(kept) >= max_outstanding:
        notes.append(
            f"{len(kept)} ranges of {topic} outstanding (limit {max_outstanding}): no new "
            "ranges until runs of them succeed"
        )
    plan = plan_ranges(
        topic,
        replace(cursor, outstanding=tuple(kept)),
        watermarks,
        max_messages_per_run=max_messages_per_run,
        max_runs=max(0, room),
        on_reset=on_reset,
        topic_id=topic_id,
    )
    notes.extend(plan.notes)
    if plan.halted:
        return TickPlan([], cursor, plan.lag, 0, troubled, notes, halted=plan.halted)
    if plan.cursor.generation != cursor.generation:
        requests, troubled = [], []  # the old topic's ranges are gone with it
    fresh = [Outstanding(r, 1, now, day=day) for r in plan.ranges]
    outstanding = (*plan.cursor.outstanding, *fresh)
    lag = dict(plan.lag)
    failed_parts = {t.outstanding.range.part for t in troubled}
    in_flight = 0
    for entry in outstanding:
        if entry.range.part in failed_parts:
            lag[entry.range.partition] = lag.get(entry.range.partition, 0) + entry.range.size
        else:
            in_flight += entry.range.size
    return TickPlan(
        requests=[*requests, *fresh],
        cursor=replace(plan.cursor, outstanding=outstanding),
        lag=lag,
        in_flight=in_flight,
        troubled=troubled,
        notes=notes,
    )


#: Days whose last day-stage refresh a cursor remembers (the newest ones).
DAY_REFRESH_MEMORY = 7


@dataclass(frozen=True)
class DayRefreshPlan:
    chosen: set[int]  # indices of the tick's requests that also run the day stages
    day_runs: list[str]  # days whose day stages run on their own now (no new messages)
    refreshed: dict[str, float]  # the cursor's: when each day's day stages were last asked for
    stale: tuple[str, ...]  # the cursor's: days with parts newer than their day stages


def plan_day_refresh(
    days: Sequence[str],
    refreshed: Mapping[str, float],
    stale: Iterable[str] = (),
    *,
    busy: Iterable[str] = (),
    today: str = "",
    now: float,
    every_s: float,
) -> DayRefreshPlan:
    """When a topic's micro-batches also run the day-scoped stages (quality, aggregates, the
    report). A micro-batch computes its own part; those stages read the whole day, so they cost
    more as the day fills and are asked for at most once per `every_s` and day:

    - by the tick's last request of the day (`days`: each request's day), which sees the most;
    - or on their own for a day that has had micro-batches since (stale) and no range of it
      outstanding (`busy`): once the interval has passed, or at once for a day before `today`
      (the day's close: its report is then final, with no new micro-batch needed).

    `every_s <= 0` asks every request for them.
    """
    if every_s <= 0:
        return DayRefreshPlan(set(range(len(days))), [], dict(refreshed), ())
    after = dict(refreshed)
    behind = set(stale)
    last = {day: i for i, day in enumerate(days)}
    chosen: set[int] = set()
    for day, index in last.items():
        if now - refreshed.get(day, float("-inf")) >= every_s:
            chosen.add(index)
            after[day] = now
        # stale even when refreshed: the refresh may run before this tick's other ranges (or a
        # retry of an earlier one) land; a run of the day stages alone follows once none is left
        behind.add(day)
    busy_days = set(busy) | set(last)
    day_runs = []
    for day in sorted(behind - busy_days):
        if day < today or now - after.get(day, float("-inf")) >= every_s:
            day_runs.append(day)
            after[day] = now
            behind.discard(day)
    kept = sorted(after, reverse=True)[:DAY_REFRESH_MEMORY]
    return DayRefreshPlan(
        chosen, day_runs, {day: after[day] for day in kept}, tuple(sorted(behind))
    )


def failure_tag(error: str) -> str:
    """The TAG_FAILURE value: the error's first non-empty line, at most FAILURE_TAG_MAX_CHARS."""
    line = next((line.strip() for line in error.splitlines() if line.strip()), "unknown error")
    if len(line) > FAILURE_TAG_MAX_CHARS:
        line = line[: FAILURE_TAG_MAX_CHARS - 3] + "..."
    return line
