"""Dynamic batching: requests that arrive together become one call.

One `Batcher` is one thread in front of a function over a list of items. Callers `submit`
their items and get a `Future`; the thread takes every request queued while the previous call
ran (and, when the queue holds little, waits `max_wait_ms` for callers arriving together), calls
the function once on their concatenated items, and hands each caller its own slice. The model
server has one per registry entry; the API's `POST /v1/predict` has one in front of the
pipeline's kernels, whose fixed cost per call (frames, cleaning, the predictions kernel) is
most of a one-text request's cost.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

_CLOSE = object()


class BatchMetrics:
    """The Prometheus metrics a `Batcher` reports to: `<prefix>_queue_depth` (a gauge),
    `_batch_rows`, `_batch_requests` and `_batch_seconds` (histograms), each with one label
    (the batcher's name). `requests`, `rows` and `call` word their help texts."""

    def __init__(
        self,
        prefix: str,
        label: str,
        registry: CollectorRegistry,
        *,
        requests: str,
        rows: str,
        call: str,
        max_rows: int,
    ):
        self.queue_depth = Gauge(
            f"{prefix}_queue_depth",
            f"{requests} waiting for the next {call}.",
            [label],
            registry=registry,
        )
        self.batch_rows = Histogram(
            f"{prefix}_batch_rows",
            f"{rows} per {call}.",
            [label],
            buckets=tuple(2**i for i in range((2 * max_rows).bit_length())),
            registry=registry,
        )
        self.batch_requests = Histogram(
            f"{prefix}_batch_requests",
            f"{requests} answered by one {call} (batching across callers).",
            [label],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            f"{prefix}_batch_seconds", f"Seconds per {call}.", [label], registry=registry
        )


class Batcher:
    """One thread: queued requests become one `run(items)` over their concatenated items; each
    request gets `(its slice of the outputs, its share of the call's seconds)`, or the call's
    exception."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[Any]], Sequence[Any]],
        metrics: BatchMetrics,
        max_rows: int = 1_024,
        max_wait_ms: float = 2.0,
        on_close: Callable[[], None] | None = None,
    ):
        """`on_close` runs in the batcher's thread when it stops: what `run` built there
        (a SQLite connection, say) is released by the thread that made it."""
        self.name, self.run, self.metrics, self.on_close = name, run, metrics, on_close
        self.max_rows, self.max_wait = max_rows, max_wait_ms / 1000
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, items: list[Any]) -> Future:
        future: Future = Future()
        if not self._thread.is_alive():
            future.set_exception(RuntimeError(f"batcher {self.name} is closed"))
            return future
        self._queue.put((items, future))
        self.metrics.queue_depth.labels(self.name).set(self._queue.qsize())
        return future

    def close(self) -> None:
        """Stop the thread once the requests queued before this are answered."""
        self._queue.put(_CLOSE)

    def _take(self) -> list[tuple[list[Any], Future]] | None:
        first = self._queue.get()
        if first is _CLOSE:
            return None
        batch = [first]
        rows = len(first[0])
        deadline = time.monotonic() + self.max_wait
        while rows < self.max_rows:
            try:
                if self._queue.qsize() or rows >= self.max_rows // 4:
                    item = self._queue.get_nowait()
                else:  # little to do: wait a moment for callers arriving together
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if item is _CLOSE:  # answer what came before it, then stop
                self._queue.put(_CLOSE)
                break
            batch.append(item)
            rows += len(item[0])
        return batch

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            self.metrics.queue_depth.labels(self.name).set(self._queue.qsize())
            # a caller that gave up (its future cancelled: a client that went away) costs nothing
            batch = [(part, f) for part, f in taken if f.set_running_or_notify_cancel()]
            if not batch:
                continue
            items = [item for part, _ in batch for item in part]
            started = time.perf_counter()
            try:
                out = self.run(items)
            except Exception as error:  # each caller gets the error, the thread goes on
                for _, future in batch:
                    future.set_exception(error)
                continue
            seconds = time.perf_counter() - started
            self.metrics.batch_rows.labels(self.name).observe(len(items))
            self.metrics.batch_requests.labels(self.name).observe(len(batch))
            self.metrics.batch_seconds.labels(self.name).observe(seconds)
            start = 0
            for part, future in batch:
                share = seconds * len(part) / max(len(items), 1)
                future.set_result((out[start : start + len(part)], share))
                start += len(part)
        if self.on_close is not None:
            self.on_close()
