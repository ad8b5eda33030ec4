"""The steps of a Kafka sensor tick (`nlp_assets.kafka.sensors`), each called alone with
`dg.build_sensor_context` and a stand-in broker: no Kafka, no runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg
import pytest

from nlp_assets.checks import all_checks
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kafka.messages import MODE_DEAD_LETTER, TAG_FAILURE, TAG_MODE, OffsetRange
from nlp_assets.kafka.planner import (
    Outstanding,
    RangeRun,
    TickPlan,
    TopicCursor,
    TopicSettings,
    plan_tick,
)
from nlp_assets.kafka.resource import KafkaResource, KafkaUnavailable
from nlp_assets.kafka.sensors import (
    day_stage_requests,
    evaluate_topic,
    idle_reason,
    lag_observation,
    range_requests,
)
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import DAY_SCOPE, PIPELINE

TOPIC = "docs"
DAY = "2026-11-25"
T0 = 1_800_000_000.0
CONFIG = TopicSettings(
    topic=TOPIC,
    priority=4,
    interval_s=30,
    max_messages_per_run=10,
    max_runs_per_tick=3,
    max_outstanding_ranges=100,
    max_range_attempts=2,
    range_retry_backoff_s=60.0,
    day_refresh_minutes=10.0,
)


class StubKafka(KafkaResource):
    """One partition holding offsets [0, high); `down`: the broker cannot be reached."""

    high: int = 25
    down: bool = False

    def topic_id(self, topic: str) -> str | None:
        if self.down:
            raise KafkaUnavailable("stub: connection refused")
        return "id-1"

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]] | None:
        return {0: (0, self.high)}


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=[daily_pipeline_job],
        resources=build_resources(lake_dir="/nonexistent/lake", landing_dir="/nonexistent"),
    )


@pytest.fixture
def context(definitions: dg.Definitions) -> Iterator[dg.SensorEvaluationContext]:
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(instance=instance, definitions=definitions) as context,
    ):
        yield context


def _plan(cursor: TopicCursor | None = None, runs=None) -> TickPlan:
    return plan_tick(CONFIG, cursor or TopicCursor(), {0: (0, 25)}, runs or {}, now=T0, day=DAY)


def test_a_tick_requests_bounded_ranges_and_returns_the_cursor_that_tracks_them(context):
    result = evaluate_topic(
        context, StubKafka(bootstrap_servers="stub"), CONFIG, daily_pipeline_job, day=DAY, now=T0
    )
    assert isinstance(result, dg.SensorResult)
    assert [r.run_key for r in result.run_requests or []] == [
        f"{TOPIC}:0:0-10",
        f"{TOPIC}:0:10-20",
        f"{TOPIC}:0:20-25",
    ]
    cursor = json.loads(result.cursor or "")
    assert cursor["offsets"] == {"0": 25} and len(cursor["outstanding"]) == 3
    (observation,) = result.asset_events
    assert observation.metadata["requested_messages"].value == 25


def test_an_unreachable_broker_skips_the_tick_and_keeps_the_cursor(context):
    down = StubKafka(bootstrap_servers="stub", down=True)
    result = evaluate_topic(context, down, CONFIG, daily_pipeline_job, day=DAY, now=T0)
    assert result == dg.SkipReason("broker unreachable, cursor kept: stub: connection refused")


def test_only_the_last_request_of_the_day_runs_the_day_stages(context):
    plan = _plan()
    requests = range_requests(context, CONFIG, plan.requests, [DAY] * 3, {2}, daily_pipeline_job)
    part_stages = set(stage_names(PIPELINE)) - set(stage_names(DAY_SCOPE))
    for request in requests[:2]:
        assert {k.to_user_string() for k in request.asset_selection or []} == part_stages
        assert all(c.name != "freshness" for c in request.asset_check_keys or [])
    assert requests[2].asset_selection is None  # the whole job
    assert {r.tags["dagster/priority"] for r in requests} == {"4"}


def test_a_range_past_its_attempts_is_requested_in_dead_letter_mode(context):
    dead = Outstanding(OffsetRange(TOPIC, 0, 0, 10), attempt=3, requested_at=T0, day=DAY)
    (request,) = range_requests(context, CONFIG, [dead], [DAY], set(), daily_pipeline_job)
    assert request.run_key == f"{TOPIC}:0:0-10:a3"
    assert request.tags[TAG_MODE] == MODE_DEAD_LETTER
    assert request.tags[TAG_FAILURE] == "no run of the range was found"


def test_a_stale_day_gets_a_run_of_the_day_stages_alone(context):
    (request,) = day_stage_requests(context, CONFIG, ["2026-11-24"], daily_pipeline_job, now=T0)
    assert request.run_key == f"{TOPIC}:day:2026-11-24:{T0:.0f}"
    assert request.partition_key == "2026-11-24"
    assert {k.to_user_string() for k in request.asset_selection or []} == set(
        stage_names(DAY_SCOPE)
    )
    assert day_stage_requests(context, CONFIG, [], daily_pipeline_job, now=T0) == []


def test_the_observation_counts_lag_and_what_was_requested():
    smaller = replace(CONFIG, max_runs_per_tick=1)
    plan = plan_tick(smaller, TopicCursor(), {0: (0, 25)}, {}, now=T0, day=DAY)
    metadata = lag_observation(smaller, plan, {0: (0, 25)}).metadata
    assert metadata["consumer_lag"].value == 15  # 25 - the one range of 10 requested
    assert metadata["requested_runs"].value == 1 and metadata["in_flight_messages"].value == 10


def test_an_idle_tick_says_the_lag_and_the_failed_ranges():
    first = _plan()
    assert idle_reason(TOPIC, _plan(first.cursor)) == f"no new messages on {TOPIC} (lag 0)"
    failed = RangeRun("r1", "failed", attempt=1, created_at=T0 - 20, ended_at=T0 - 10)
    waiting = _plan(first.cursor, {first.requests[0].range.part: [failed]})
    assert idle_reason(TOPIC, waiting) == (
        f"no new messages on {TOPIC} (lag 10); failed: {TOPIC}:0:0-10 (run r1) failed: "
        "attempt 2 re-requested after the backoff at "
        + datetime.fromtimestamp(T0 + 50, UTC).isoformat()
    )
