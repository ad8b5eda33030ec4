"""The streaming path end to end under hostile traffic and faults, with a real `dagster-daemon`.

Each test starts its own Tansu broker, redis-server and daemon (nlp_assets_tests/chaos.py), lets
the topic's Kafka sensor turn produced messages into queued micro-batch runs, injects faults,
waits until everything settles and then counts: every valid message in predictions exactly
once, every hostile one in the dead-letter topic or the lake quarantine with a reason, no run
left unfinished, no `gpu` pool slot held, consumer lag back to 0.

`NLP_CHAOS_MESSAGES` changes the size of the big test (default 2,500: five ranges of about 500
messages, enough for each fault to hit a run in flight; `make chaos` runs the same faults at
20,000 messages with figures, `bench/chaos.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import PARENT_RUN_ID_TAG

from nlp_assets_tests.chaos import (
    HOSTILE_KINDS,
    MODEL_STEPS,
    chaos_stack,
    make_traffic,
    run_chaos,
)

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="module")
def sentiment_head(trained_sentiment_head: Path) -> Path:
    """The session's trained head (conftest): what it scores does not matter here."""
    return trained_sentiment_head


def test_a_run_killed_mid_model_step_frees_its_gpu_slot_and_is_retried_to_success(
    tmp_path: Path, sentiment_head: Path
):
    """SIGKILL of a run's worker during features/predictions (an OOM kill) with a second run
    queued behind it: the run is marked failed, run monitoring frees its `gpu` slot, run
    retries re-execute it, the queue drains: nothing lost, nothing doubled, nothing running."""
    with chaos_stack(tmp_path, sentiment_head, max_messages_per_run=100) as stack:
        messages = make_traffic(stack.topic, 200, hostile_share=0, odd_share=0)
        outcome = run_chaos(
            stack, messages, produce_seconds=1, faults=frozenset({"kill"}), settle_timeout=900
        )
        report = outcome.report(stack)
        print(report)

        instance, accounting = stack.instance, outcome.accounting
        (killed,) = outcome.faults.killed
        assert killed.step in MODEL_STEPS
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE, report
        retries = instance.get_runs(dg.RunsFilter(tags={PARENT_RUN_ID_TAG: killed.run_id}))
        assert [r.status for r in retries] == [DagsterRunStatus.SUCCESS], report
        assert (accounting.gpu_claimed, accounting.gpu_pending) == (0, 0), report
        assert accounting.unsettled == [], report
        assert accounting.valid_missing == [] and accounting.duplicated_doc_ids == 0, report
        assert accounting.lag == 0, report


def test_hostile_and_valid_messages_survive_a_killed_run_a_paused_broker_and_a_stopped_redis(
    tmp_path: Path, sentiment_head: Path
):
    """Every valid message in predictions exactly once, every hostile one (each kind, 2 MB
    messages included) in the DLQ or the quarantine with a reason, nothing left running or
    holding a slot, lag back to 0: after a SIGKILLed run, a 20 s broker pause and a stopped
    Redis."""
    total = int(os.getenv("NLP_CHAOS_MESSAGES", "2500"))
    with chaos_stack(tmp_path, sentiment_head, max_messages_per_run=total // 5 + 1) as stack:
        messages = make_traffic(stack.topic, total, hostile_share=0.03)
        assert {m.kind for m in messages} >= set(HOSTILE_KINDS)
        # a burst (5 s), so the ranges are about max_messages_per_run each: five runs and retries
        outcome = run_chaos(stack, messages, produce_seconds=5, settle_timeout=1800)
        report = outcome.report(stack)
        print(report)

        accounting = outcome.accounting
        assert [k.step in MODEL_STEPS for k in outcome.faults.killed] == [True], report
        assert outcome.faults.broker_paused and outcome.faults.redis_stopped, report
        assert accounting.valid_missing == [], report
        assert accounting.duplicated_doc_ids == 0, report
        assert accounting.hostile_unaccounted == [], report
        assert accounting.hostile_without_reason == [], report
        # the lake quarantine holds every one; the DLQ copies wait out the 20 s broker pause
        # (dlq_delivery_timeout_s), so none is missing there either
        assert accounting.hostile_in_quarantine == accounting.hostile_sent, report
        assert accounting.hostile_in_dlq == accounting.hostile_sent, report
        assert accounting.valid_in_dlq == [], report
        assert accounting.unsettled == [], report
        assert (accounting.gpu_claimed, accounting.gpu_pending) == (0, 0), report
        assert accounting.lag == 0, report
