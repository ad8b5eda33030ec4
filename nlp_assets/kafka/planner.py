"""The Kafka sensor's planning, as plain functions: the cursor it keeps per topic, the bounded
offset ranges it requests (`plan_ranges`), the settling of requested ranges with their runs,
their retries and dead-letter mode (`plan_tick`), and when micro-batches also run the day
stages (`plan_day_refresh`). `TopicSettings` holds a topic sensor's limits in one object.

Nothing here talks to a broker or to Dagster: the sensor (`sensors.py`) reads the watermarks
and the runs of each range and hands them in; the message contract is `messages.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from nlp_assets.kafka.messages import OffsetRange

#: The longest wait between two requests of a failed range (the backoff doubles up to this).
MAX_RETRY_BACKOFF_SECONDS = 3600.0
#: A failed run Dagster marked for retry (`dagster/will_retry`) whose retry has not appeared
#: after this long counts as failed for good (the daemon's run retries may be off).
RETRY_PENDING_GRACE_SECONDS = 600.0
#: A requested range with no run after this long is requested again under the same run key:
#: Dagster launches a run key once, so this only fills in a run that was never created.
NO_RUN_GRACE_SECONDS = 300.0

RunState = Literal["succeeded", "running", "retrying", "failed"]
ResetPolicy = Literal["restart", "halt"]


@dataclass(frozen=True)
class TopicSettings:
    """Everything a topic's sensor is told: the topic, its runs' priority, how often it ticks
    and the limits its planning keeps to. `from_env` reads the `NLP_KAFKA_*` variables
    (docs/kafka.md); tests and benchmarks `dataclasses.replace` what they vary."""

    topic: str
    priority: int
    interval_s: int  # the least time between two ticks
    max_messages_per_run: int
    max_runs_per_tick: int
    max_outstanding_ranges: int  # past it no new ranges are requested
    max_range_attempts: int  # runs of a failed range before it is dead-lettered
    range_retry_backoff_s: float  # before a failed range is requested again, doubling
    day_refresh_minutes: float  # least time between two micro-batches running the day stages
    on_reset: ResetPolicy = "restart"  # a recreated topic: read it anew, or halt

    @classmethod
    def from_env(cls, topic: str, priority: int = 0) -> TopicSettings:
        from nlp_assets import settings

        return cls(
            topic=topic,
            priority=priority,
            interval_s=settings.kafka_sensor_interval_seconds(),
            max_messages_per_run=settings.kafka_max_messages_per_run(),
            max_runs_per_tick=settings.kafka_max_runs_per_tick(),
            max_outstanding_ranges=settings.kafka_max_outstanding_ranges(),
            max_range_attempts=settings.kafka_range_max_attempts(),
            range_retry_backoff_s=settings.kafka_range_retry_backoff_seconds(),
            day_refresh_minutes=settings.kafka_day_refresh_minutes(),
        )

    def __post_init__(self) -> None:
        if self.max_messages_per_run < 1 or self.max_runs_per_tick < 0:
            raise ValueError("max_messages_per_run must be >= 1 and max_runs_per_tick >= 0")
        if self.max_range_attempts < 1 or self.max_outstanding_ranges < 1:
            raise ValueError("max_range_attempts and max_outstanding_ranges must be >= 1")


@dataclass(frozen=True)
class Outstanding:
    """A requested range not yet known to have succeeded: what the cursor keeps of it.

    Attempt 1 is the first request; each attempt after a run of the previous one failed for
    good has its own run key (``...:a2``) and the same part. An attempt past the sensor's
    bound is a dead-letter request (see TAG_MODE).
    """

    range: OffsetRange
    day: str  # the partition of its first request: every attempt lands there
    attempt: int = 1
    requested_at: float = 0.0  # unix seconds of the latest request of this attempt
    failed_run: str | None = None  # the failed run that made this attempt (None for attempt 1)

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
        """What `to_dict` wrote; a `KeyError` names a missing key."""
        return cls(
            range=OffsetRange(
                str(data["topic"]),
                int(data["partition"]),
                int(data["start"]),
                int(data["end"]),
                int(data["generation"]),
            ),
            day=str(data["day"]),
            attempt=int(data["attempt"]),
            requested_at=float(data["requested_at"]),
            failed_run=data["failed_run"],
        )


@dataclass(frozen=True)
class RangeRun:
    """One run of a range as the sensor found it in the instance (no Dagster types)."""

    run_id: str
    state: RunState  # "retrying": failed, and Dagster will launch a retry of it
    attempt: int  # the run's TAG_ATTEMPT (1 when absent: a run from before the tag existed)
    created_at: float
    ended_at: float | None = None


#: The keys of a cursor's JSON, every one always written.
CURSOR_KEYS = frozenset(
    {"offsets", "generation", "topic_id", "outstanding", "day_refreshed", "days_stale"}
)


@dataclass(frozen=True)
class TopicCursor:
    """What a topic's sensor remembers: the next offset per partition, the generation, the
    topic's identity (Kafka topic id, when the broker tells it) and the ranges requested but not
    yet known to have succeeded, and when it last asked for each day's day stages (see
    `plan_day_refresh`). Its JSON always holds every key (`CURSOR_KEYS`); a cursor of any other
    shape is refused, naming what it lacks (reset the sensor's cursor in the UI)."""

    offsets: dict[int, int] = field(default_factory=dict)
    generation: int = 0
    topic_id: str | None = None
    outstanding: tuple[Outstanding, ...] = ()
    day_refreshed: dict[str, float] = field(default_factory=dict)
    days_stale: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "offsets": {str(p): o for p, o in self.offsets.items()},
                "generation": self.generation,
                "topic_id": self.topic_id,
                "outstanding": [o.to_dict() for o in self.outstanding],
                "day_refreshed": self.day_refreshed,
                "days_stale": list(self.days_stale),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> TopicCursor:
        """The cursor `to_json` wrote; none yet (a new sensor): the empty cursor."""
        if not text:
            return cls()
        data = json.loads(text)
        missing = sorted(CURSOR_KEYS - set(data)) if isinstance(data, dict) else CURSOR_KEYS
        if missing:
            raise ValueError(
                f"Kafka sensor cursor of an unknown shape: no {', '.join(sorted(missing))}; "
                "reset the sensor's cursor (the topic is then read from its low watermarks)"
            )
        try:
            return cls(
                offsets={int(p): int(o) for p, o in data["offsets"].items()},
                generation=int(data["generation"]),
                topic_id=data["topic_id"],
                outstanding=tuple(Outstanding.from_dict(o) for o in data["outstanding"]),
                day_refreshed={str(d): float(t) for d, t in data["day_refreshed"].items()},
                days_stale=tuple(str(d) for d in data["days_stale"]),
            )
        except KeyError as error:
            raise ValueError(
                f"Kafka sensor cursor: an outstanding range has no {error}; reset the "
                "sensor's cursor"
            ) from None


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
    limits: TopicSettings,
    cursor: TopicCursor,
    watermarks: Mapping[int, tuple[int, int]],
    runs: Mapping[str, list[RangeRun]],
    *,
    now: float,
    day: str,
    topic_id: str | None = None,
) -> TickPlan:
    """One sensor tick of `limits.topic`: settle the outstanding ranges with their runs (by
    part), then plan new ranges while fewer than `max_outstanding_ranges` are outstanding; at
    most `max_runs_per_tick` requests.

    A range is done when any run of it succeeded. Otherwise the newest run of its current
    attempt decides: queued or running, or failed with a Dagster retry coming -> wait; failed
    for good (or cancelled) -> after `retry_backoff` from its end, the next attempt; attempts
    past `max_range_attempts` are dead-letter requests, repeated with backoff until one succeeds.
    No run at all after NO_RUN_GRACE_SECONDS -> requested again under the same run key.
    New ranges belong to `day`; every later attempt of a range keeps the day of its first.
    """
    topic, max_runs, max_outstanding = (
        limits.topic,
        limits.max_runs_per_tick,
        limits.max_outstanding_ranges,
    )
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
        retry_at = ended + retry_backoff(entry.attempt, limits.range_retry_backoff_s)
        if now >= retry_at and budget:
            following = Outstanding(entry.range, entry.day, entry.attempt + 1, now, newest.run_id)
            requests.append(following)
            kept.append(following)
            mode = (
                "dead-letter mode"
                if following.dead_letter(limits.max_range_attempts)
                else "re-requested"
            )
            troubled.append(
                TroubledRange(
                    following, f"attempt {following.attempt} {mode}", newest.run_id, ended
                )
            )
            continue
        kept.append(entry)
        following_mode = (
            "in dead-letter mode"
            if entry.attempt + 1 > limits.max_range_attempts
            else "re-requested"
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
        max_messages_per_run=limits.max_messages_per_run,
        max_runs=max(0, room),
        on_reset=limits.on_reset,
        topic_id=topic_id,
    )
    notes.extend(plan.notes)
    if plan.halted:
        return TickPlan([], cursor, plan.lag, 0, troubled, notes, halted=plan.halted)
    if plan.cursor.generation != cursor.generation:
        requests, troubled = [], []  # the old topic's ranges are gone with it
    fresh = [Outstanding(r, day, 1, now) for r in plan.ranges]
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
