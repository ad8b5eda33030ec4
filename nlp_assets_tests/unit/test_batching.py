"""`Batcher` (resources/models/batching.py): requests that arrive together become one call, each
caller gets its own slice or the call's error, a caller that gave up costs nothing, and closing
answers what was queued before it releasing the thread's resources in that thread."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram

from nlp_assets.resources.models.batching import Batcher


class Metrics:
    def __init__(self) -> None:
        r = CollectorRegistry()
        self.registry = r
        self.queue_depth = Gauge("q", "", ["name"], registry=r)
        self.batch_rows = Histogram("rows", "", ["name"], registry=r)
        self.batch_requests = Histogram("requests", "", ["name"], buckets=(1, 2, 4, 8), registry=r)
        self.batch_seconds = Histogram("seconds", "", ["name"], registry=r)

    def calls(self) -> float:
        return self.registry.get_sample_value("requests_count", {"name": "t"}) or 0.0


class Gate:
    """A `run` that blocks on its first call until opened, so later requests queue up."""

    def __init__(self) -> None:
        self.opened, self.entered = threading.Event(), threading.Event()
        self.calls: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.entered.set()
        self.opened.wait(10)
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        return [i * 10 for i in items]


def test_requests_queued_during_a_call_become_one_call_each_with_its_own_slice() -> None:
    run, metrics = Gate(), Metrics()
    batcher = Batcher("t", run, metrics, max_wait_ms=0)
    first = batcher.submit([1])
    assert run.entered.wait(10)
    queued = [batcher.submit([i, i + 1]) for i in range(2, 12, 2)]
    run.opened.set()
    assert first.result(10)[0] == [10]
    assert [f.result(10)[0] for f in queued] == [[i * 10, (i + 1) * 10] for i in range(2, 12, 2)]
    assert run.calls == [[1], list(range(2, 12))]  # the five queued requests: one call
    assert metrics.calls() == 2
    batcher.close()


def test_a_failed_call_fails_each_of_its_callers_and_the_next_call_still_runs() -> None:
    run = Gate()
    batcher = Batcher("t", run, Metrics(), max_wait_ms=0)
    blocker = batcher.submit([0])
    assert run.entered.wait(10)
    bad, good_in_same_call = batcher.submit([-1]), batcher.submit([3])
    run.opened.set()
    blocker.result(10)
    for future in (bad, good_in_same_call):
        with pytest.raises(ValueError, match="negative item"):
            future.result(10)
    assert batcher.submit([4]).result(10)[0] == [40]
    batcher.close()


def test_a_caller_that_gave_up_before_its_call_costs_no_work() -> None:
    run = Gate()
    batcher = Batcher("t", run, Metrics(), max_wait_ms=0)
    batcher.submit([1])
    assert run.entered.wait(10)
    gone, kept = batcher.submit([7]), batcher.submit([8])
    assert gone.cancel()
    run.opened.set()
    assert kept.result(10)[0] == [80]
    assert [7] not in run.calls and all(7 not in call for call in run.calls)
    with pytest.raises(CancelledError):
        gone.result(0)
    batcher.close()


def test_close_answers_what_was_queued_then_releases_in_the_batchers_own_thread() -> None:
    run = Gate()
    released_in: list[str] = []
    batcher = Batcher(
        "t",
        run,
        Metrics(),
        max_wait_ms=0,
        on_close=lambda: released_in.append(threading.current_thread().name),
    )
    batcher.submit([1])
    assert run.entered.wait(10)
    before = batcher.submit([2])
    batcher.close()
    run.opened.set()
    assert before.result(10)[0] == [20]
    batcher._thread.join(10)
    assert released_in == ["batcher-t"]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([3]).result(1)
