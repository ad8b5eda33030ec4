"""The sensor's bookkeeping of requested ranges as a plain function (`plan_tick`): a range is
done only when a run of it succeeded; failed ranges are re-requested with backoff, then
dead-lettered; a recreated topic (new topic id) starts a new generation."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nlp_assets.kafka.messages import FAILURE_TAG_MAX_CHARS, OffsetRange, failure_tag
from nlp_assets.kafka.planner import (
    DAY_REFRESH_MEMORY,
    MAX_RETRY_BACKOFF_SECONDS,
    NO_RUN_GRACE_SECONDS,
    RETRY_PENDING_GRACE_SECONDS,
    Outstanding,
    RangeRun,
    TopicCursor,
    TopicSettings,
    plan_day_refresh,
    plan_tick,
    retry_backoff,
)

TOPIC = "docs"
T0 = 1_800_000_000.0
RANGE = OffsetRange(TOPIC, 0, 0, 10)
DAY = "2026-11-25"


LIMITS = TopicSettings(
    topic=TOPIC,
    priority=0,
    interval_s=30,
    max_messages_per_run=10,
    max_runs_per_tick=5,
    max_outstanding_ranges=10,
    max_range_attempts=2,
    range_retry_backoff_s=60.0,
    day_refresh_minutes=10.0,
)


def _tick(cursor: TopicCursor, runs=None, *, now: float, watermarks=None, topic_id=None, **limits):
    return plan_tick(
        replace(LIMITS, **limits),
        cursor,
        watermarks or {0: (0, 10)},
        runs or {},
        now=now,
        day=DAY,
        topic_id=topic_id,
    )


def _cursor(*entries: Outstanding, topic_id: str | None = "id-1") -> TopicCursor:
    return TopicCursor({0: 10}, 0, topic_id, entries)


def _run(run_id: str, state: str, *, attempt: int = 1, ended: float = T0 + 10) -> RangeRun:
    return RangeRun(run_id, state, attempt, created_at=ended - 5, ended_at=ended)  # type: ignore[arg-type]


def test_the_cursor_round_trips_and_one_of_another_shape_is_refused():
    cursor = _cursor(Outstanding(RANGE, DAY, 3, T0, "run-2"))
    assert TopicCursor.from_json(cursor.to_json()) == cursor
    assert TopicCursor.from_json(None) == TopicCursor()
    with pytest.raises(ValueError, match="no day_refreshed, days_stale, outstanding, topic_id"):
        TopicCursor.from_json(json.dumps({"generation": 2, "offsets": {"0": 7}}))
    entry = json.loads(cursor.to_json())
    del entry["outstanding"][0]["day"]
    with pytest.raises(ValueError, match="an outstanding range has no 'day'"):
        TopicCursor.from_json(json.dumps(entry))


def test_new_ranges_are_outstanding_until_a_run_of_them_succeeds():
    first = _tick(TopicCursor(), now=T0)
    assert [o.run_key for o in first.requests] == ["docs:0:0-10"]
    assert first.cursor.outstanding == (Outstanding(RANGE, DAY, 1, T0),)
    assert first.total_lag == 0 and first.in_flight == 10
    running = _tick(first.cursor, {RANGE.part: [_run("r1", "running")]}, now=T0 + 9999)
    assert running.requests == [] and running.cursor.outstanding == first.cursor.outstanding
    done = _tick(first.cursor, {RANGE.part: [_run("r1", "succeeded")]}, now=T0 + 20)
    assert done.cursor.outstanding == () and done.in_flight == 0 and done.troubled == []


def test_a_failed_range_waits_its_backoff_then_is_requested_as_the_next_attempt():
    cursor = _cursor(Outstanding(RANGE, "2026-11-24", 1, T0))
    runs = {RANGE.part: [_run("r1", "failed", ended=T0 + 10)]}
    waiting = _tick(cursor, runs, now=T0 + 69)
    assert waiting.requests == [] and waiting.total_lag == 10 and waiting.in_flight == 0
    [trouble] = waiting.troubled
    assert (trouble.run_id, trouble.failed_at, trouble.retry_at) == ("r1", T0 + 10, T0 + 70)
    again = _tick(cursor, runs, now=T0 + 70)
    [request] = again.requests
    assert request == Outstanding(RANGE, "2026-11-24", 2, T0 + 70, "r1")  # same day
    assert request.run_key == "docs:0:0-10:a2" and not request.dead_letter(2)
    assert again.total_lag == 10  # a range that failed counts until it succeeds


def test_past_the_bound_the_range_is_dead_lettered_until_that_succeeds():
    cursor = _cursor(Outstanding(RANGE, DAY, 2, T0, "r1"))
    runs = {RANGE.part: [_run("r1", "failed", ended=T0 - 50), _run("r2", "failed", attempt=2)]}
    assert _tick(cursor, runs, now=T0 + 10 + 119).requests == []  # backoff doubled: 120 s
    [dead] = _tick(cursor, runs, now=T0 + 10 + 120).requests
    assert dead.attempt == 3 and dead.dead_letter(2) and dead.failed_run == "r2"
    # a dead-letter run that fails (broker down) is requested again in dead-letter mode
    runs[RANGE.part].append(_run("r3", "failed", attempt=3, ended=T0 + 500))
    [again] = _tick(_cursor(dead), runs, now=T0 + 500 + 240).requests
    assert again.attempt == 4 and again.dead_letter(2) and again.run_key.endswith(":a4")


def test_the_backoff_doubles_up_to_its_cap():
    assert [retry_backoff(a, 60) for a in (1, 2, 3)] == [60, 120, 240]
    assert retry_backoff(20, 60) == MAX_RETRY_BACKOFF_SECONDS


def test_runs_of_an_earlier_attempt_do_not_decide_the_current_one():
    cursor = _cursor(Outstanding(RANGE, DAY, 2, T0 + 100, "r1"))
    runs = {RANGE.part: [_run("r1", "failed", attempt=1, ended=T0)]}
    plan = _tick(cursor, runs, now=T0 + 200)  # attempt 2 has no run yet (within the grace)
    assert plan.requests == [] and plan.cursor.outstanding == cursor.outstanding
    succeeded_earlier = {RANGE.part: [*runs[RANGE.part], _run("m", "succeeded", attempt=1)]}
    assert _tick(cursor, succeeded_earlier, now=T0 + 200).cursor.outstanding == ()


def test_a_failed_run_dagster_will_retry_is_waited_for_within_a_grace():
    cursor = _cursor(Outstanding(RANGE, DAY, 1, T0))
    runs = {RANGE.part: [_run("r1", "retrying", ended=T0 + 10)]}
    pending = _tick(cursor, runs, now=T0 + 10 + RETRY_PENDING_GRACE_SECONDS - 1)
    assert pending.requests == [] and pending.troubled == [] and pending.total_lag == 0
    # the retry never came (run retries daemon off): failed for good
    [request] = _tick(cursor, runs, now=T0 + 10 + RETRY_PENDING_GRACE_SECONDS).requests
    assert request.attempt == 2


def test_a_request_that_never_became_a_run_is_requested_again_under_its_key():
    cursor = _cursor(Outstanding(RANGE, "2026-11-24", 1, T0))
    assert _tick(cursor, now=T0 + NO_RUN_GRACE_SECONDS - 1).requests == []
    lost = _tick(cursor, now=T0 + NO_RUN_GRACE_SECONDS)
    [request] = lost.requests
    assert request.run_key == "docs:0:0-10" and request.day == "2026-11-24"
    assert lost.total_lag == 10 and "no run found" in lost.troubled[0].state


def test_outstanding_ranges_are_bounded_and_requests_share_the_tick_budget():
    entries = [
        Outstanding(OffsetRange(TOPIC, 0, i * 10, i * 10 + 10), DAY, 1, T0) for i in range(3)
    ]
    cursor = TopicCursor({0: 30}, 0, "id-1", tuple(entries))
    watermarks = {0: (0, 100)}
    full = _tick(cursor, now=T0 + 1, watermarks=watermarks, max_outstanding_ranges=3)
    assert full.requests == [] and full.total_lag == 70
    assert any("outstanding (limit 3)" in note for note in full.notes)
    runs = {e.range.part: [_run(f"r{i}", "failed", ended=T0)] for i, e in enumerate(entries)}
    plan = _tick(cursor, runs, now=T0 + 60, watermarks=watermarks, max_runs_per_tick=4)
    assert [o.run_key for o in plan.requests] == [
        "docs:0:0-10:a2",
        "docs:0:10-20:a2",
        "docs:0:20-30:a2",
        "docs:0:30-40",
    ]


def test_a_new_topic_id_starts_a_new_generation_and_drops_the_old_ranges():
    cursor = _cursor(Outstanding(RANGE, DAY, 1, T0), topic_id="id-1")
    runs = {RANGE.part: [_run("r1", "failed")]}
    # the new topic already holds more messages than the old cursor (10)
    plan = _tick(cursor, runs, now=T0 + 999, watermarks={0: (0, 25)}, topic_id="id-2")
    assert [o.run_key for o in plan.requests] == [
        "docs:0:0-10:g1",
        "docs:0:10-20:g1",
        "docs:0:20-25:g1",
    ]
    assert (plan.cursor.generation, plan.cursor.topic_id, plan.cursor.offsets) == (
        1,
        "id-2",
        {0: 25},
    )
    assert all(o.range.generation == 1 for o in plan.cursor.outstanding)
    assert plan.troubled == [] and any("dropped" in note for note in plan.notes)
    halted = _tick(cursor, now=T0, watermarks={0: (0, 25)}, topic_id="id-2", on_reset="halt")
    assert halted.halted and halted.requests == [] and halted.cursor == cursor
    # no id known yet (the broker told none before) or none told now: adopted, no reset
    adopted = _tick(_cursor(topic_id=None), now=T0, watermarks={0: (0, 12)}, topic_id="id-9")
    assert adopted.cursor.topic_id == "id-9" and adopted.cursor.generation == 0
    kept = _tick(cursor, now=T0 + 1, watermarks={0: (0, 12)}, topic_id=None)
    assert kept.cursor.topic_id == "id-1" and kept.cursor.generation == 0


def test_the_failure_tag_is_the_first_line_cut_to_its_limit():
    assert failure_tag("\n  ValueError: bad offset\n  at line 2\n") == "ValueError: bad offset"
    long = failure_tag("x" * 2000)
    assert len(long) == FAILURE_TAG_MAX_CHARS and long.endswith("...")
    assert failure_tag("") == "unknown error"


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError, match="max_range_attempts"):
        replace(LIMITS, max_range_attempts=0)
    with pytest.raises(ValueError, match="max_messages_per_run"):
        replace(LIMITS, max_messages_per_run=0)


# -- the day stages: at most one micro-batch per day and interval refreshes them ------------------

DAYS = ["2026-11-24", "2026-11-25", "2026-11-26"]


@given(
    ticks=st.lists(
        st.tuples(
            st.lists(st.sampled_from(DAYS), max_size=12),
            st.sets(st.sampled_from(DAYS)),
            st.floats(0, 3_600),
        ),
        min_size=1,
        max_size=8,
    ),
    every_s=st.sampled_from([60.0, 600.0]),
)
def test_day_stages_run_at_most_once_per_interval_and_never_leave_a_closed_day_stale(
    ticks: list[tuple[list[str], set[str], float]], every_s: float
):
    refreshed: dict[str, float] = {}
    stale: tuple[str, ...] = ()
    now = T0
    asked: dict[str, list[float]] = {}
    today = DAYS[-1]
    for days, busy, wait in ticks:
        now += wait
        plan = plan_day_refresh(
            days, refreshed, stale, busy=busy, today=today, now=now, every_s=every_s
        )
        for day in set(days):
            mine = [i for i, d in enumerate(days) if d == day]
            picked = plan.chosen & set(mine)
            # one request per day and tick at most, and then the day's last (it sees the most)
            assert picked in (set(), {mine[-1]})
            # a day with a new part stays stale until a run of its day stages alone, after
            # every range of it has landed
            assert day in plan.stale
            assert day not in plan.day_runs  # its micro-batches are still to run
            if picked:
                asked.setdefault(day, []).append(now)
        for day in plan.day_runs:
            assert day not in busy and day in (set(stale) | set(days))
            asked.setdefault(day, []).append(now)
        assert plan.chosen <= set(range(len(days)))
        # a closed day with nothing outstanding is never left stale
        assert not {d for d in plan.stale if d < today} - busy - set(days)
        refreshed, stale = plan.refreshed, plan.stale
    for day, times in asked.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert day < today or all(gap >= every_s for gap in gaps)


def test_day_stages_are_refreshed_again_once_the_interval_has_passed():
    days = ["2026-11-25", "2026-11-25"]
    first = plan_day_refresh(days, {}, now=T0, every_s=600)
    assert first.chosen == {1} and first.stale == ("2026-11-25",)
    within = plan_day_refresh(days, first.refreshed, now=T0 + 599, every_s=600)
    assert within.chosen == set() and within.stale == ("2026-11-25",)
    due = plan_day_refresh(days, within.refreshed, within.stale, now=T0 + 600, every_s=600)
    assert due.chosen == {1} and due.day_runs == []
    # 0 = the day stages in every micro-batch
    assert plan_day_refresh(days, first.refreshed, now=T0 + 1, every_s=0).chosen == {0, 1}


def test_a_stale_day_runs_its_day_stages_alone_when_quiet_or_closed():
    day, before = "2026-11-25", "2026-11-24"
    refreshed = {day: T0, before: T0}
    stale = (before, day)
    # its ranges still outstanding: wait for them
    busy = plan_day_refresh(
        [], refreshed, stale, busy=[before, day], today=day, now=T0 + 1, every_s=600
    )
    assert busy.day_runs == [] and busy.stale == stale
    # nothing outstanding: the closed day at once, today's once the interval has passed
    quiet = plan_day_refresh([], refreshed, stale, today=day, now=T0 + 1, every_s=600)
    assert quiet.day_runs == [before] and quiet.stale == (day,)
    later = plan_day_refresh([], quiet.refreshed, quiet.stale, today=day, now=T0 + 600, every_s=600)
    assert later.day_runs == [day] and later.stale == ()


def test_the_cursor_remembers_day_refreshes_of_the_newest_days_only():
    seen: dict[str, float] = {}
    for n in range(DAY_REFRESH_MEMORY + 5):
        seen = plan_day_refresh([f"2026-11-{n + 1:02d}"], seen, now=T0 + n, every_s=60).refreshed
    assert len(seen) == DAY_REFRESH_MEMORY
    assert min(seen) == f"2026-11-{5 + 1:02d}"
    cursor = TopicCursor(offsets={0: 3}, day_refreshed=seen, days_stale=("2026-11-10",))
    assert TopicCursor.from_json(cursor.to_json()) == cursor
