"""One sensor per Kafka topic: new offsets become bounded micro-batch runs of the daily pipeline.

A tick reads the topic's id and watermarks (never payloads), looks up the runs of the ranges it
requested earlier (one bounded instance query by their part tags), and plans with
`nlp_assets.kafka.planner.plan_tick`:

- new ranges: one RunRequest each, run_key `topic:partition:start-end` (end exclusive), today's
  (UTC) partition, the range in tags, attempt 1, the topic's priority as `dagster/priority`;
- a range is done only when a run of it succeeded; until then the cursor keeps it (at most
  `NLP_KAFKA_MAX_OUTSTANDING_RANGES`; past that no new ranges are requested). A range whose run
  failed for good (no Dagster run retry pending) is requested again after a backoff
  (`NLP_KAFKA_RANGE_RETRY_BACKOFF_SECONDS`, doubling) as attempt 2, 3... with run key
  `...:a<attempt>` and the same part and day; past `NLP_KAFKA_RANGE_MAX_ATTEMPTS` in dead-letter
  mode (TAG_MODE, TAG_FAILURE = the last run's error), where the raw stage sends every message
  of the range to the dead-letter topic and the quarantine. Failed ranges count in the lag,
  are listed in the observation (`failed_ranges`, with their runs) and logged as warnings.
- the day stages (quality, aggregates, report: they read the whole day, so they cost more as
  the day fills) run in at most one micro-batch per day and `NLP_KAFKA_DAY_REFRESH_MINUTES`: the
  tick's last request of the day asks for the whole job, the others (`asset_selection`) for the
  part stages only. A day with parts newer than its day stages and no range outstanding gets a
  run of the day stages alone (run key `topic:day:<day>:<time>`): once the interval passed, or
  at once when the day has closed, so a closed day's report is final without a schedule.
- a recreated topic (a new Kafka topic id, or offsets behind the cursor) starts a new
  generation read from the low watermarks (policy "restart") or halts (policy "halt").

Dagster stores the new cursor only after the runs are submitted, and never starts two runs with
the same run_key, so a range attempt is requested once. When the broker cannot be reached, the
tick is skipped and the cursor stays.

The sensor itself is one line (`evaluate_topic`); each step of a tick is a function of its
own, testable with `dg.build_sensor_context`. Its settings are one `TopicSettings`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES

from nlp_assets import metrics, settings, tracing
from nlp_assets.executor import micro_batch_run_config
from nlp_assets.jobs import daily_pipeline_job
from nlp_assets.kafka.messages import (
    MODE_DEAD_LETTER,
    TAG_ATTEMPT,
    TAG_FAILURE,
    TAG_MODE,
    failure_tag,
)
from nlp_assets.kafka.planner import (
    DayRefreshPlan,
    Outstanding,
    RangeRun,
    RunState,
    TickPlan,
    TopicCursor,
    TopicSettings,
    plan_day_refresh,
    plan_tick,
)
from nlp_assets.kafka.resource import KafkaResource, KafkaUnavailable
from nlp_assets.kafka.topics import topic_asset_key
from nlp_assets.resources.lake import PART_TAG
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import DAY_SCOPE

TRIGGER_TAG = "nlp/trigger"
PRIORITY_TAG = "dagster/priority"
#: Runs read per outstanding range and tick (attempts x Dagster retries; newest first).
RUNS_PER_RANGE = 16


def sensor_name(topic: str) -> str:
    return "kafka_" + "".join(c if c.isalnum() else "_" for c in topic) + "_sensor"


def range_runs(
    instance: dg.DagsterInstance, outstanding: Iterable[Outstanding]
) -> dict[str, list[RangeRun]]:
    """The runs of each outstanding range, by part (Dagster's retries, re-executions and every
    attempt carry the part tag): one query, bounded by RUNS_PER_RANGE per range."""
    parts = sorted({entry.range.part for entry in outstanding})
    if not parts:
        return {}
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={PART_TAG: parts}), limit=len(parts) * RUNS_PER_RANGE
    )
    found: dict[str, list[RangeRun]] = {}
    for record in records:
        run = record.dagster_run
        state: RunState
        if run.status == dg.DagsterRunStatus.SUCCESS:
            state = "succeeded"
        elif run.status in NOT_FINISHED_STATUSES:
            state = "running"
        elif run.is_complete_and_waiting_to_retry:  # failed, `dagster/will_retry` and no retry yet
            state = "retrying"
        else:  # failed for good, or cancelled
            state = "failed"
        try:
            attempt = int(run.tags.get(TAG_ATTEMPT, "1"))
        except ValueError:
            attempt = 1
        found.setdefault(run.tags[PART_TAG], []).append(
            RangeRun(
                run_id=run.run_id,
                state=state,
                attempt=attempt,
                created_at=record.create_timestamp.timestamp(),
                ended_at=record.end_time,
            )
        )
    return found


def failure_reason(instance: dg.DagsterInstance, run_id: str | None) -> str:
    """The error a run failed with: the innermost cause of its run failure (the exception the
    step raised), else the failure message, else its status."""
    if run_id is None:
        return "no run of the range was found"
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1, ascending=False
    ).records
    if records:
        entry = records[0].event_log_entry
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        error = getattr(data, "error", None)
        if error is not None:
            while error.cause is not None:
                error = error.cause
            return failure_tag(error.message)
        if entry.message:
            return failure_tag(entry.message)
    run = instance.get_run_by_id(run_id)
    status = run.status.value if run is not None else "deleted"
    return failure_tag(f"run {run_id} ended {status} without an error message")


def _job_stages(
    context: dg.SensorEvaluationContext, selection: dg.AssetSelection
) -> tuple[list[dg.AssetKey], list[dg.AssetCheckKey]]:
    graph = context.repository_def.asset_graph if context.repository_def else None
    if graph is None:
        raise dg.DagsterInvariantViolationError("a Kafka sensor needs its code location's assets")
    return sorted(selection.resolve(graph)), sorted(selection.resolve_checks(graph))


def part_stages(
    context: dg.SensorEvaluationContext, job: dg.UnresolvedAssetJobDefinition
) -> tuple[list[dg.AssetKey], list[dg.AssetCheckKey]]:
    """The job's assets and checks less the day stages: what a micro-batch that does not
    refresh the day runs. The checks are named: left unnamed, Dagster would add every check of
    those assets, the freshness checks the job leaves out included."""
    return _job_stages(context, job.selection - DAY_SCOPE)


def day_stages(
    context: dg.SensorEvaluationContext, job: dg.UnresolvedAssetJobDefinition
) -> tuple[list[dg.AssetKey], list[dg.AssetCheckKey]]:
    """The job's day stages and their checks: a refresh with no new messages."""
    return _job_stages(context, job.selection & DAY_SCOPE)


def log_plan(context: dg.SensorEvaluationContext, topic: str, plan: TickPlan) -> None:
    """What an operator should know of the tick, as warnings in the sensor's log."""
    for note in plan.notes:
        context.log.warning(note)
    for trouble in plan.troubled:
        context.log.warning(
            f"Kafka range {trouble.outstanding.run_key} ({trouble.outstanding.range.size} "
            f"messages) of {topic}: {trouble.state}; last failed run {trouble.run_id}"
        )


def refresh_plan(
    config: TopicSettings, plan: TickPlan, *, day: str, now: float
) -> tuple[list[str], DayRefreshPlan]:
    """Each request's day (a re-requested range keeps the day of its first request), and which
    requests also run the day stages, or which days run them alone (`plan_day_refresh`);
    `day` is today's (UTC): the days before it have closed."""
    days = [entry.day for entry in plan.requests]
    refresh = plan_day_refresh(
        days,
        plan.cursor.day_refreshed,
        plan.cursor.days_stale,
        busy=[entry.day for entry in plan.cursor.outstanding],
        today=day,
        now=now,
        every_s=config.day_refresh_minutes * 60,
    )
    return days, refresh


def range_requests(
    context: dg.SensorEvaluationContext,
    config: TopicSettings,
    requests: list[Outstanding],
    days: list[str],
    with_day_stages: set[int],
    job: dg.UnresolvedAssetJobDefinition,
) -> list[dg.RunRequest]:
    """One micro-batch run per requested range (index i runs on `days[i]`): the whole job for
    the indices in `with_day_stages`, the part stages only for the others. A range past its
    attempts is requested in dead-letter mode, with its last run's error."""
    part_assets, part_checks = part_stages(context, job) if requests else ([], [])
    run_requests = []
    for index, entry in enumerate(requests):
        tags = {
            **entry.range.tags(),
            PART_TAG: entry.range.part,
            TRIGGER_TAG: "kafka",
            PRIORITY_TAG: str(config.priority),
            TAG_ATTEMPT: str(entry.attempt),
            **tracing.run_tags(),
        }
        if entry.dead_letter(config.max_range_attempts):
            tags[TAG_MODE] = MODE_DEAD_LETTER
            tags[TAG_FAILURE] = failure_reason(context.instance, entry.failed_run)
        whole_job = index in with_day_stages
        run_requests.append(
            dg.RunRequest(
                run_key=entry.run_key,
                partition_key=days[index],
                tags=tags,
                run_config=micro_batch_run_config(),
                # None: the whole job; else the part stages only
                asset_selection=None if whole_job else part_assets,
                asset_check_keys=None if whole_job else part_checks,
            )
        )
    return run_requests


def day_stage_requests(
    context: dg.SensorEvaluationContext,
    config: TopicSettings,
    stale_days: list[str],
    job: dg.UnresolvedAssetJobDefinition,
    *,
    now: float,
) -> list[dg.RunRequest]:
    """A run of the day stages alone for each of `stale_days` (no new messages of them)."""
    if not stale_days:
        return []
    day_assets, day_checks = day_stages(context, job)
    return [
        dg.RunRequest(
            run_key=f"{config.topic}:day:{stale_day}:{now:.0f}",
            partition_key=stale_day,
            tags={TRIGGER_TAG: "kafka", PRIORITY_TAG: str(config.priority), **tracing.run_tags()},
            run_config=micro_batch_run_config(),
            asset_selection=day_assets,
            asset_check_keys=day_checks,
        )
        for stale_day in stale_days
    ]


def lag_observation(
    config: TopicSettings, plan: TickPlan, watermarks: Mapping[int, tuple[int, int]]
) -> dg.AssetObservation:
    """The tick's figures on the topic's external asset: consumer lag, in-flight and failed
    ranges, what was requested."""
    return dg.AssetObservation(
        asset_key=topic_asset_key(config.topic),
        metadata={
            "consumer_lag": plan.total_lag,
            "consumer_lag_by_partition": dg.MetadataValue.json(
                {str(p): lag for p, lag in sorted(plan.lag.items())}
            ),
            "in_flight_messages": plan.in_flight,
            "outstanding_ranges": len(plan.cursor.outstanding),
            "failed_ranges": dg.MetadataValue.json(
                [trouble.as_metadata(config.max_range_attempts) for trouble in plan.troubled]
            ),
            "requested_messages": sum(r.range.size for r in plan.requests),
            "requested_runs": len(plan.requests),
            "partitions": len(watermarks),
            "generation": plan.cursor.generation,
            "topic_id": plan.cursor.topic_id or "unknown (the broker tells none)",
        },
    )


def idle_reason(topic: str, plan: TickPlan) -> str:
    """Why a tick requested nothing: the lag, and the first failed ranges with what is next."""
    reason = f"no new messages on {topic} (lag {plan.total_lag})"
    if plan.troubled:
        reason += "; failed: " + "; ".join(
            f"{t.outstanding.run_key} (run {t.run_id}) {t.state}"
            + (f" at {datetime.fromtimestamp(t.retry_at, UTC).isoformat()}" if t.retry_at else "")
            for t in plan.troubled[:5]
        )
    return reason


def evaluate_topic(
    context: dg.SensorEvaluationContext,
    kafka: KafkaResource,
    config: TopicSettings,
    job: dg.UnresolvedAssetJobDefinition,
    *,
    day: str,
    now: float,
) -> dg.SensorResult | dg.SkipReason:
    """One tick of a topic's sensor on `day` (UTC) at `now` (unix seconds)."""
    topic = config.topic
    cursor = TopicCursor.from_json(context.cursor)
    try:
        topic_id = kafka.topic_id(topic)  # before the watermarks (see plan_ranges)
        watermarks = kafka.watermarks(topic)
    except KafkaUnavailable as error:
        return dg.SkipReason(f"broker unreachable, cursor kept: {error}")
    if watermarks is None:
        return dg.SkipReason(f"topic {topic} does not exist (yet); cursor kept")
    plan = plan_tick(
        config,
        cursor,
        watermarks,
        range_runs(context.instance, cursor.outstanding),
        now=now,
        day=day,
        topic_id=topic_id,
    )
    log_plan(context, topic, plan)
    days, refresh = refresh_plan(config, plan, day=day, now=now)
    requests = [
        *range_requests(context, config, plan.requests, days, refresh.chosen, job),
        *day_stage_requests(context, config, refresh.day_runs, job, now=now),
    ]
    observation = lag_observation(config, plan, watermarks)
    metrics.export_consumer_lag(  # Prometheus: nlp_kafka_consumer_lag{topic}
        topic=topic,
        lag=plan.total_lag,
        asset=topic_asset_key(topic).to_user_string(),
        job=sensor_name(topic),
        warn=context.log.warning,
        failed_ranges=len(plan.troubled),
    )
    if plan.halted:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(plan.halted),
            cursor=context.cursor,
            asset_events=[observation],
        )
    return dg.SensorResult(
        run_requests=requests,
        cursor=replace(
            plan.cursor, day_refreshed=refresh.refreshed, days_stale=refresh.stale
        ).to_json(),
        asset_events=[observation],
        skip_reason=None if requests else dg.SkipReason(idle_reason(topic, plan)),
    )


def build_kafka_sensor(
    config: TopicSettings,
    *,
    job: dg.UnresolvedAssetJobDefinition = daily_pipeline_job,
    today: Callable[[], str] = lambda: datetime.now(UTC).date().isoformat(),
    now: Callable[[], float] = time.time,
) -> dg.SensorDefinition:
    """The sensor of one topic (`TopicSettings.from_env` for the `NLP_KAFKA_*` limits)."""

    @dg.sensor(
        name=sensor_name(config.topic),
        job=job,
        minimum_interval_seconds=config.interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Kafka topic {config.topic}: new offsets become micro-batch runs of "
        f"today's partition, at most {config.max_messages_per_run} messages a run and "
        f"{config.max_runs_per_tick} runs a tick (priority {config.priority}). Cursor: the next "
        "offset per partition and the ranges not yet known to have succeeded (at most "
        f"{config.max_outstanding_ranges}). A range whose runs failed is requested again after "
        f"{config.range_retry_backoff_s:g} s (doubling), {config.max_range_attempts} attempts, "
        f"then once more in dead-letter mode. A recreated topic: policy '{config.on_reset}'. "
        f"The day stages ({', '.join(stage_names(DAY_SCOPE))}) run in at most one micro-batch "
        f"per day every {config.day_refresh_minutes:g} min; the others in every one.",
    )
    def kafka_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        tracing.configure("nlp-sensors")
        with tracing.span(
            f"sensor {sensor_name(config.topic)}",
            {"messaging.system": "kafka", "messaging.destination.name": config.topic},
        ) as span:  # the parent of every run the tick requests (their tags carry it)
            result = evaluate_topic(context, kafka, config, job, day=today(), now=now())
            if isinstance(result, dg.SensorResult):
                span.set_attribute("nlp.runs_requested", len(result.run_requests or []))
            return result

    return kafka_sensor


kafka_sensors = [
    build_kafka_sensor(TopicSettings.from_env(name, priority))
    for name, priority in settings.kafka_topics()
]
