"""The chaos harness: the real streaming path under hostile traffic and faults, then counted.

Real components only: a private Tansu broker (this harness pauses it), a private redis-server
on a free port (this harness stops it; the machine's shared Redis is never touched), and a
`dagster-daemon run` subprocess with its own DAGSTER_HOME whose dagster.yaml carries the repo's
run coordinator, concurrency, run retries and run monitoring (monitoring intervals capped by
`FAST_MONITORING` so a test does not wait minutes). The daemon loads `nlp_assets.definitions`
with the lake, landing and reports folders, the topic, the broker and Redis pointed here; the
topic's Kafka sensor ticks and its micro-batch runs go through the queued run coordinator and
the default run launcher (a gRPC code server and one run-worker process per run).

Faults (`Chaos`): SIGKILL of one run's worker process tree while a model step runs (what the
OOM killer or a lost pod does; the run worker shares the daemon's process group, so the tree is
killed pid by pid), SIGSTOP of the broker for a while then SIGCONT (Tansu's memory storage
loses every message on restart: pausing is the honest outage), Redis stopped then restarted.

Shared by `nlp_assets_tests/test_chaos_streaming.py` and `bench/chaos.py`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES, DagsterRunStatus
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, PARTITION_NAME_TAG

from nlp_assets import settings
from nlp_assets.kafka.messages import (
    HEADER_REASON,
    TAG_ATTEMPT,
    TAG_END,
    TAG_MODE,
    TAG_PARTITION,
    TAG_START,
    TAG_TOPIC,
)
from nlp_assets.kafka.sensors import sensor_name
from nlp_assets.kafka.topics import topic_asset_key
from nlp_assets.kernels.ingest import doc_id_for
from nlp_assets.lake import QUARANTINE, Lake
from nlp_assets_tests.kafka_broker import Broker, tansu_broker
from nlp_assets_tests.services import free_port, stop_process_group

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL_STEPS = ("features", "predictions")
GPU_POOL = "gpu"
#: Caps on the repo's run-monitoring intervals for a test instance; a key the repo's
#: dagster.yaml lacks stays absent (so a missing setting still shows as a failure).
FAST_MONITORING = {"poll_interval_seconds": 2, "free_slots_after_run_end_seconds": 3}
#: Runs still to be started or finished (queued, starting, started, cancelling...).
UNSETTLED = list(NOT_FINISHED_STATUSES)
#: Daemon log lines that repeat every tick and hide what happened.
_LOG_NOISE = (
    "Priority sorting",
    "Checking for new runs",
    "no new messages on",
    "runs for monitoring",
    "MonitoringDaemon - \x1b[34mINFO\x1b[0m - Checking run",
)

#: The faults `run_chaos` injects, in this order.
FAULTS = frozenset({"kill", "pause", "redis"})

VALID_KINDS = ("valid", "valid_odd_chars")
HOSTILE_KINDS = (
    "oversized_2mb",
    "deep_nesting",
    "huge_integer",
    "overflowing_timestamp",
    "invalid_json",
    "invalid_utf8",
    "not_an_object",
    "missing_id",
    "missing_text",
    "whitespace_text",
)
TWO_MB = 2 * 1024 * 1024
NESTING_DEPTH = 30_000  # 60 kB of brackets: under the 64 KiB message cap, so the parser sees it
HUGE_DIGITS = 5_000  # over Python's 4,300-digit int parsing limit


# -- traffic ------------------------------------------------------------------------------------
@dataclass
class Message:
    index: int
    kind: str
    payload: bytes
    doc_id: str | None = None  # the doc_id the pipeline gives it, when it carries an id
    offset: int = -1  # set on delivery
    acked_at: float = 0.0  # wall time of the broker's acknowledgement

    @property
    def valid(self) -> bool:
        return self.kind in VALID_KINDS


def corpus_sentences() -> list[str]:
    """Real sentences: the labelled sentiment set (every domain)."""
    labelled = pl.read_parquet(settings.labelled_sentiment_path())
    return [t for t in labelled["text"].to_list() if t and t.strip()]


def _unique_texts(sentences: list[str], n: int) -> list[str]:
    """n distinct texts, each a pair of real sentences (made unique by choice of pair)."""
    count = len(sentences)
    texts: list[str] = []
    seen: set[str] = set()
    i = 0
    while len(texts) < n:
        first, round_ = i % count, i // count
        second = (first * 7 + round_ * 31 + 3) % count
        text = f"{sentences[first]} {sentences[second]}"
        if text in seen:
            text = f"{text} ({i})"
        seen.add(text)
        texts.append(text)
        i += 1
    return texts


def _hostile(kind: str, i: int, text: str) -> tuple[bytes, str | None]:
    """(payload, id it carries or None) for one hostile message of `kind`."""
    if kind == "oversized_2mb":  # valid JSON, far over the message cap
        head = json.dumps({"id": f"big-{i}", "text": text})[:-1]
        filler = "x" * (TWO_MB - len(head) - 16)
        return f'{head}, "pad": "{filler}"}}'.encode(), f"big-{i}"
    if kind == "deep_nesting":
        nested = "[" * NESTING_DEPTH + "]" * NESTING_DEPTH
        return (
            f'{{"id": "deep-{i}", "text": {json.dumps(text)}, "metadata": {{"n": {nested}}}}}'
        ).encode(), f"deep-{i}"
    if kind == "huge_integer":
        digits = "9" * HUGE_DIGITS
        field_ = ("priority", "id", "timestamp")[i % 3]
        if field_ == "id":
            return (json.dumps({"text": text})[:-1] + f', "id": {digits}}}').encode(), None
        body = json.dumps({"id": f"int-{i}", "text": text})[:-1]
        return (body + f', "{field_}": {digits}}}').encode(), f"int-{i}"
    if kind == "overflowing_timestamp":
        stamp = ("1e308", str(10**30), "-" + str(10**25), '"99999-12-31T00:00:00"')[i % 4]
        return (
            json.dumps({"id": f"ts-{i}", "text": text})[:-1] + f', "timestamp": {stamp}}}'
        ).encode(), f"ts-{i}"
    if kind == "invalid_json":
        return f'{{"id": "bad-{i}", "text": "unterminated {i}'.encode(), None
    if kind == "invalid_utf8":
        return b'{"id": "utf-%d", "text": "caf\xc3\x28 \xff\xfe %d"}' % (i, i), None
    if kind == "not_an_object":
        return (b"[1, 2, 3]", b'"just a string"', b"42", b"null", b"true")[i % 5], None
    if kind == "missing_id":
        return json.dumps({"text": text}).encode(), None
    if kind == "missing_text":
        return json.dumps({"id": f"notext-{i}"}).encode(), f"notext-{i}"
    if kind == "whitespace_text":
        return json.dumps({"id": f"blank-{i}", "text": " \t\n \u2003 "}).encode(), f"blank-{i}"
    raise ValueError(f"unknown hostile kind {kind!r}")


def _odd_chars(text: str) -> str:
    """A valid text with a NUL, a zero-width space, a zero-width joiner and a soft hyphen inside."""
    words = text.split(" ")
    middle = max(1, len(words) // 2)
    return (
        " ".join(words[:middle]) + " \x00wo\u200brd\u200d in\u00adside " + " ".join(words[middle:])
    )


def make_traffic(
    topic: str,
    n: int,
    *,
    hostile_share: float = 0.03,
    odd_share: float = 0.01,
    seed: int = 11,
    sentences: list[str] | None = None,
) -> list[Message]:
    """n messages in production order: valid ones (unique real texts, some with NUL and
    zero-width characters inside) and `hostile_share` hostile ones, every kind in turn."""
    rng = random.Random(seed)
    hostile_n = max(len(HOSTILE_KINDS), math.ceil(n * hostile_share)) if hostile_share else 0
    odd_n = math.ceil(n * odd_share)
    positions = rng.sample(range(n), hostile_n + odd_n)
    hostile_at = {
        p: HOSTILE_KINDS[k % len(HOSTILE_KINDS)] for k, p in enumerate(positions[:hostile_n])
    }
    odd_at = set(positions[hostile_n:])
    texts = _unique_texts(sentences or corpus_sentences(), n)
    messages = []
    for i in range(n):
        kind = hostile_at.get(i)
        if kind is not None:
            payload, source_id = _hostile(kind, i, texts[i])
        else:
            kind = "valid_odd_chars" if i in odd_at else "valid"
            source_id = f"chaos-{i}"
            text = _odd_chars(texts[i]) if kind == "valid_odd_chars" else texts[i]
            payload = json.dumps(
                {"id": source_id, "text": text, "timestamp": int(time.time())}
            ).encode()
        doc_id = doc_id_for(topic, source_id, "") if source_id else None
        messages.append(Message(index=i, kind=kind, payload=payload, doc_id=doc_id))
    return messages


def produce(
    broker: Broker, topic: str, messages: list[Message], *, rate: float | None = None
) -> None:
    """Produce to partition 0 (one message per batch on Tansu), recording each offset and ack
    time; `rate` messages/s, or as fast as the broker takes them. Raises if any is undelivered."""
    producer = Producer(
        broker.producer_config
        | {"message.max.bytes": 8 << 20, "message.timeout.ms": 300_000, "acks": "all"}
    )
    failures: list[str] = []

    def on_delivery(message: Message) -> Callable[[Any, Any], None]:
        def delivered(error, record) -> None:
            if error is not None:
                failures.append(f"{message.index}: {error}")
                return
            message.offset = record.offset()
            message.acked_at = time.time()

        return delivered

    started = time.monotonic()
    for k, message in enumerate(messages):
        if rate:
            delay = started + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(
                    topic, message.payload, partition=0, on_delivery=on_delivery(message)
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(300)
    if left or failures:
        raise RuntimeError(f"produce to {topic}: {left} undelivered, failures {failures[:3]}")


# -- services -----------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server on a free port (no persistence), which may be stopped and
    started again on the same port."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        log = (self.root / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for_port(self.port, self.process, 20, "redis-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process, timeout=10)
        self.process = None


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float, what: str) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def instance_config(repo_config: Path = REPO / "dagster.yaml") -> dict[str, Any]:
    """The test instance's dagster.yaml: the repo's run coordinator, concurrency, run retries,
    run monitoring (intervals capped by FAST_MONITORING) and run workers' log handler, SQLite
    storage under its home."""
    config = yaml.safe_load(repo_config.read_text(encoding="utf-8")) or {}
    kept = {
        key: config[key]
        for key in (
            "run_coordinator",
            "concurrency",
            "run_retries",
            "run_monitoring",
            "python_logs",
            "telemetry",
        )
        if key in config
    }
    coordinator = kept.get("run_coordinator")
    if coordinator:  # the queue is read every second instead of every five
        coordinator.setdefault("config", {})["dequeue_interval_seconds"] = 1
    monitoring = kept.get("run_monitoring")
    if monitoring:
        for key, cap in FAST_MONITORING.items():
            if key in monitoring:
                monitoring[key] = min(int(monitoring[key]), cap)
    return kept


@dataclass
class Stack:
    """Everything one chaos run started; `env` is what the daemon and its runs see."""

    root: Path
    home: Path
    lake_dir: Path
    broker: Broker
    topic: str
    redis: RedisServer
    env: dict[str, str]
    daemon: subprocess.Popen
    instance: dg.DagsterInstance
    sensor: str

    @property
    def broker_process(self) -> subprocess.Popen:
        assert self.broker.process is not None
        return self.broker.process

    def daemon_log_tail(self, lines: int = 60) -> str:
        text = (self.root / "daemon.log").read_text(errors="replace").splitlines()
        return "\n".join([line for line in text if not any(n in line for n in _LOG_NOISE)][-lines:])

    def lake(self) -> Lake:
        return Lake(self.lake_dir)


@contextlib.contextmanager
def chaos_stack(
    root: Path,
    sentiment_head: Path,
    *,
    max_messages_per_run: int,
    sensor_interval_s: int = 3,
    range_retry_backoff_s: float = 5,
    repo_config: Path = REPO / "dagster.yaml",
    extra_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Start the broker, Redis and the daemon; start the topic's sensor; stop all at the end.

    The sensor ticks every `sensor_interval_s` and re-requests a failed range after
    `range_retry_backoff_s` (production defaults: 30 s and 60 s), so a test settles sooner."""
    root.mkdir(parents=True, exist_ok=True)
    home, lake_dir = root / "dagster_home", root / "lake"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(repo_config)))
    shutil.copytree(sentiment_head, lake_dir / "sentiment_model", dirs_exist_ok=True)
    workspace = root / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {
                        "python_module": {
                            "module_name": "nlp_assets.definitions",
                            "working_directory": str(REPO),
                        }
                    }
                ]
            }
        )
    )
    with contextlib.ExitStack() as stack:
        bootstrap, broker_process = stack.enter_context(tansu_broker())
        broker = Broker(bootstrap=bootstrap, is_tansu=True, process=broker_process)
        stack.callback(_resume, broker_process)  # never leave it stopped
        topic = broker.create_topic("chaos", partitions=1)
        redis = RedisServer(root)
        redis.start()
        stack.callback(redis.stop)
        env = (
            {
                key: value
                for key, value in os.environ.items()
                if not key.startswith(("NLP_", "KAFKA_", "REDIS_", "DAGSTER_", "PROMETHEUS_"))
                and key not in ("DATABASE_URL",)
            }
            | {
                "DAGSTER_HOME": str(home),
                "NLP_DATA_DIR": str(root / "data"),
                "NLP_LAKE_DIR": str(lake_dir),
                "NLP_LANDING_DIR": str(root / "landing"),
                "NLP_REPORTS_DIR": str(root / "reports"),
                "NLP_METRICS_TEXTFILE_DIR": str(root / "metrics"),
                "NLP_LABELLED_SENTIMENT": settings.labelled_sentiment_path(),
                "NLP_KAFKA_TOPICS": topic,
                "NLP_KAFKA_MAX_MESSAGES_PER_RUN": str(max_messages_per_run),
                "NLP_KAFKA_SENSOR_INTERVAL_SECONDS": str(sensor_interval_s),
                "NLP_KAFKA_RANGE_RETRY_BACKOFF_SECONDS": str(range_retry_backoff_s),
                "NLP_DEVICE": "cpu",
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "REDIS_URL": redis.url,
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
            | (extra_env or {})
        )
        # The instance's SQLite storages are created (and stamped by alembic) here, once,
        # before the daemon and the CLI open them: processes stamping a new database at once
        # can leave two alembic heads ("more than one head present"; seen under load).
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        log = stack.enter_context((root / "daemon.log").open("ab"))
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.callback(stop_process_group, daemon, 30)
        name = sensor_name(topic)
        started = subprocess.run(
            [str(BIN / "dagster"), "sensor", "start", name, "-w", str(workspace)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if started.returncode != 0:
            raise RuntimeError(f"dagster sensor start {name}: {started.stdout}\n{started.stderr}")
        yield Stack(
            root=root,
            home=home,
            lake_dir=lake_dir,
            broker=broker,
            topic=topic,
            redis=redis,
            env=env,
            daemon=daemon,
            instance=instance,
            sensor=name,
        )


def _resume(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)


# -- faults -------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Killed:
    run_id: str
    step: str
    pids: list[int]
    at: float


@dataclass
class FaultLog:
    killed: list[Killed] = field(default_factory=list)
    broker_paused: list[tuple[float, float]] = field(default_factory=list)
    redis_stopped: list[tuple[float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _step_events(instance: dg.DagsterInstance, run_id: str) -> tuple[set[str], set[str]]:
    """(steps started, steps finished) of a run."""
    started, finished = set(), set()
    for event in instance.all_logs(
        run_id,
        of_type={
            DagsterEventType.STEP_START,
            DagsterEventType.STEP_SUCCESS,
            DagsterEventType.STEP_FAILURE,
        },
    ):
        step = event.step_key
        if event.dagster_event_type == DagsterEventType.STEP_START:
            started.add(step)
        else:
            finished.add(step)
    return started, finished


def _running_step(instance: dg.DagsterInstance, steps: tuple[str, ...]) -> tuple[str, str] | None:
    """(run_id, step) of a STARTED run now executing one of `steps`."""
    for record in instance.get_run_records(dg.RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        run_id = record.dagster_run.run_id
        started, finished = _step_events(instance, run_id)
        for step in steps:
            if step in started and step not in finished:
                return run_id, step
    return None


_WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for event in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        match = _WORKER_PID.search(event.message or "")
        if match:
            return int(match.group(1))
    return None


class Chaos:
    """Fault injection against a `Stack`; every fault is recorded in `log`."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.log = FaultLog()

    def wait_for_step(self, steps: tuple[str, ...], timeout: float) -> tuple[str, str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _running_step(self.stack.instance, steps)
            if found:
                return found
            time.sleep(0.5)
        return None

    def kill_run_mid_model_step(self, timeout: float = 300) -> Killed:
        """SIGKILL the worker of the first run seen in a model step, and all its descendants
        (the step processes), as an OOM kill of the pod would."""
        found = self.wait_for_step(MODEL_STEPS, timeout)
        if found is None:
            raise TimeoutError(f"no run reached a model step {MODEL_STEPS} within {timeout} s")
        run_id, step = found
        pid = run_worker_pid(self.stack.instance, run_id)
        if pid is None:
            raise RuntimeError(f"run {run_id} logged no run-worker pid")
        if pid not in _children(self.stack.daemon.pid):
            raise RuntimeError(f"pid {pid} of run {run_id} is not under this test's daemon")
        tree = [pid, *_children(pid)]
        for target in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
        killed = Killed(run_id=run_id, step=step, pids=tree, at=time.time())
        self.log.killed.append(killed)
        return killed

    def pause_broker(self, seconds: float) -> None:
        process = self.stack.broker_process
        started = time.time()
        os.kill(process.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        self.log.broker_paused.append((started, time.time()))

    def stop_redis(self, seconds: float) -> None:
        started = time.time()
        self.stack.redis.stop()
        try:
            time.sleep(seconds)
        finally:
            self.stack.redis.start()
        self.log.redis_stopped.append((started, time.time()))


# -- settling and accounting --------------------------------------------------------------------
def unsettled_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return [r.dagster_run for r in instance.get_run_records(dg.RunsFilter(statuses=UNSETTLED))]


def latest_lag(instance: dg.DagsterInstance, topic: str) -> tuple[int | None, float]:
    """(consumer_lag, timestamp) of the sensor's last observation of the topic."""
    records = instance.fetch_observations(topic_asset_key(topic), limit=1).records
    if not records:
        return None, 0.0
    record = records[0]
    observation = record.asset_observation
    value = observation.metadata.get("consumer_lag") if observation else None
    return (None if value is None else int(value.value)), record.timestamp


def gpu_slots(instance: dg.DagsterInstance) -> tuple[int, int]:
    """(claimed slots, pending steps) of pool gpu."""
    info = instance.event_log_storage.get_concurrency_info(GPU_POOL)
    return len(info.claimed_slots), len(info.pending_steps)


@dataclass
class Settled:
    settled: bool
    seconds: float
    reason: str


def settle(
    stack: Stack,
    *,
    expected_valid: set[str],
    timeout: float,
    quiet_s: float = 20.0,
    min_quiet_s: float = 6.0,
    poll_s: float = 3.0,
    progress: Callable[[str], None] | None = None,
) -> Settled:
    """Wait until nothing is queued or running, the lag reads 0 in an observation newer than
    the last run's end and the gpu pool holds nothing, for `quiet_s` in a row (a run retry or
    a re-requested range would start within it); or until `timeout`. Waits for the full
    quiet period only while valid messages are still missing from predictions."""
    started = time.monotonic()
    deadline = started + timeout
    quiet_since: float | None = None
    reason = "not polled"
    last_report = 0.0
    while time.monotonic() < deadline:
        instance = stack.instance
        busy = unsettled_runs(instance)
        lag, lag_at = latest_lag(instance, stack.topic)
        claimed, pending = gpu_slots(instance)
        found = len(expected_valid & prediction_ids(stack))
        last_end = max(
            (
                r.end_time or 0.0
                for r in instance.get_run_records(
                    dg.RunsFilter(
                        statuses=[
                            DagsterRunStatus.SUCCESS,
                            DagsterRunStatus.FAILURE,
                            DagsterRunStatus.CANCELED,
                        ]
                    )
                )
            ),
            default=0.0,
        )
        reason = (
            f"runs busy {len(busy)} ({', '.join(sorted({r.status.value for r in busy}))}), "
            f"lag {lag} (observed {time.time() - lag_at:.0f} s ago), gpu claimed {claimed} "
            f"pending {pending}, valid in predictions {found}/{len(expected_valid)}"
        )
        quiet = not busy and lag == 0 and lag_at > last_end and claimed == 0 and pending == 0
        now = time.monotonic()
        quiet_since = (quiet_since or now) if quiet else None
        if quiet_since is not None and now - quiet_since >= (
            min_quiet_s if found == len(expected_valid) else quiet_s
        ):
            return Settled(True, now - started, reason)
        if progress and time.monotonic() - last_report > 30:
            progress(f"[{time.monotonic() - started:.0f} s] {reason}")
            last_report = time.monotonic()
        time.sleep(poll_s)
    return Settled(False, time.monotonic() - started, reason)


def run_days(instance: dg.DagsterInstance) -> list[str]:
    days = {
        r.dagster_run.tags.get(PARTITION_NAME_TAG)
        for r in instance.get_run_records(dg.RunsFilter())
    }
    return sorted(d for d in days if d)


def prediction_ids(stack: Stack) -> set[str]:
    return set(predictions_frame(stack)["doc_id"])


def predictions_frame(stack: Stack) -> pl.DataFrame:
    lake = stack.lake()
    frames = [
        lake.read_day("predictions", day, missing_ok=True) for day in run_days(stack.instance)
    ]
    frames = [f.select("doc_id", "ingest_date") for f in frames if f.width]
    return (
        pl.concat(frames)
        if frames
        else pl.DataFrame(
            {"doc_id": [], "ingest_date": []}, schema={"doc_id": pl.String, "ingest_date": pl.Date}
        )
    )


def quarantine_rows(stack: Stack) -> pl.DataFrame:
    """Every quarantine row of every stage for the run days: stage, doc_id, location, reason."""
    root = stack.lake_dir / QUARANTINE
    lake = stack.lake()
    frames = []
    if root.exists():
        for stage_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for day in run_days(stack.instance):
                frame = lake.read_quarantine(stage_dir.name, day)
                if frame.height:
                    frames.append(
                        frame.select(
                            pl.lit(stage_dir.name).alias("stage"), "doc_id", "location", "reason"
                        )
                    )
    if not frames:
        return pl.DataFrame(
            schema={
                "stage": pl.String,
                "doc_id": pl.String,
                "location": pl.String,
                "reason": pl.String,
            }
        )
    return pl.concat(frames, how="vertical_relaxed")


def dead_letters(stack: Stack, idle_s: float = 3.0) -> dict[str, list[str]]:
    """The DLQ topic: source coordinates (the key) -> reasons of every copy sent."""
    consumer = Consumer(
        {
            "bootstrap.servers": stack.broker.bootstrap,
            "group.id": "chaos-accounting",
            "enable.auto.commit": False,
            "fetch.message.max.bytes": 8 << 20,
        }
    )
    found: dict[str, list[str]] = {}
    try:
        consumer.assign([TopicPartition(f"{stack.topic}.dlq", 0, 0)])
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            batch = [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
            for message in batch:
                headers = dict(message.headers() or [])
                reason = (headers.get(HEADER_REASON) or b"").decode("utf-8", "replace")
                key = (message.key() or b"").decode("utf-8", "replace")
                found.setdefault(key, []).append(reason)
            if batch:
                last = time.monotonic()
    finally:
        consumer.close()
    return found


@dataclass
class Accounting:
    valid_sent: int
    valid_in_predictions: int
    valid_missing: list[str]
    duplicated_doc_ids: int
    hostile_sent: int
    hostile_by_kind: dict[str, int]
    hostile_in_dlq: int
    hostile_in_quarantine: int
    hostile_unaccounted: list[tuple[int, str, str]]  # (index, kind, coordinates)
    hostile_without_reason: list[tuple[int, str]]
    valid_in_dlq: list[str]
    runs: dict[str, int]
    gpu_claimed: int
    gpu_pending: int
    unsettled: list[str]
    lag: int | None
    killed: list[Killed]
    latencies_s: list[float] = field(default_factory=list)
    messages_per_s: float | None = None

    def table(self) -> str:
        rows = [
            ("valid messages sent", self.valid_sent),
            ("valid in predictions", self.valid_in_predictions),
            ("valid missing", len(self.valid_missing)),
            ("duplicated doc_ids in predictions", self.duplicated_doc_ids),
            ("hostile messages sent", self.hostile_sent),
            ("hostile in the DLQ topic", self.hostile_in_dlq),
            ("hostile in the lake quarantine", self.hostile_in_quarantine),
            ("hostile in neither (lost)", len(self.hostile_unaccounted)),
            ("valid sent to the DLQ", len(self.valid_in_dlq)),
            *((f"runs {k}", v) for k, v in self.runs.items()),
            ("gpu slots claimed / steps pending", f"{self.gpu_claimed} / {self.gpu_pending}"),
            ("runs not finished", len(self.unsettled)),
            ("consumer lag (last observation)", self.lag),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        kinds = ", ".join(f"{k} {v}" for k, v in self.hostile_by_kind.items())
        return "\n".join([*lines, f"hostile kinds sent: {kinds}"])


def account(stack: Stack, messages: list[Message], faults: FaultLog | None = None) -> Accounting:
    instance = stack.instance
    coords = {m.index: f"{stack.topic}/0/{m.offset}" for m in messages}
    valid_ids = {m.doc_id for m in messages if m.valid}
    predicted = predictions_frame(stack)
    got = set(predicted["doc_id"])
    dlq = dead_letters(stack)
    quarantine = quarantine_rows(stack)
    q_by_location = {
        loc: reason
        for loc, reason in zip(quarantine["location"], quarantine["reason"], strict=True)
        if loc
    }
    q_by_doc = {
        doc: reason
        for doc, reason in zip(quarantine["doc_id"], quarantine["reason"], strict=True)
        if doc
    }
    in_dlq = in_quarantine = 0
    unaccounted, no_reason = [], []
    by_kind: dict[str, int] = {}
    for message in messages:
        if message.valid:
            continue
        by_kind[message.kind] = by_kind.get(message.kind, 0) + 1
        where = coords[message.index]
        dlq_reasons = dlq.get(where, [])
        q_reason = q_by_location.get(where) or (
            q_by_doc.get(message.doc_id) if message.doc_id else None
        )
        in_dlq += bool(dlq_reasons)
        in_quarantine += q_reason is not None
        if not dlq_reasons and q_reason is None:
            unaccounted.append((message.index, message.kind, where))
        elif not any(r.strip() for r in dlq_reasons) and not (q_reason or "").strip():
            no_reason.append((message.index, message.kind))
    valid_dead = [coords[m.index] for m in messages if m.valid and coords[m.index] in dlq]
    records = list(instance.get_run_records(dg.RunsFilter()))
    runs = [r.dagster_run for r in records]
    run_counts = {
        "total": len(runs),
        "succeeded": sum(r.status == DagsterRunStatus.SUCCESS for r in runs),
        "failed": sum(r.status == DagsterRunStatus.FAILURE for r in runs),
        "retried (run retries)": sum(PARENT_RUN_ID_TAG in r.tags for r in runs),
        "re-requested (sensor)": sum(int(r.tags.get(TAG_ATTEMPT, "1")) > 1 for r in runs),
        "dead-letter mode": sum(TAG_MODE in r.tags for r in runs),
    }
    claimed, pending = gpu_slots(instance)
    lag, _ = latest_lag(instance, stack.topic)
    return Accounting(
        valid_sent=len(valid_ids),
        valid_in_predictions=len(valid_ids & got),
        valid_missing=sorted(valid_ids - got),
        duplicated_doc_ids=predicted.height - predicted["doc_id"].n_unique(),
        hostile_sent=sum(not m.valid for m in messages),
        hostile_by_kind=by_kind,
        hostile_in_dlq=in_dlq,
        hostile_in_quarantine=in_quarantine,
        hostile_unaccounted=unaccounted,
        hostile_without_reason=no_reason,
        valid_in_dlq=valid_dead,
        runs=run_counts,
        gpu_claimed=claimed,
        gpu_pending=pending,
        unsettled=[f"{r.run_id} {r.status.value}" for r in unsettled_runs(instance)],
        lag=lag,
        killed=list(faults.killed) if faults else [],
    )


def latencies(stack: Stack, messages: list[Message]) -> tuple[list[float], float | None]:
    """Produce-to-prediction latency of each valid message: from the broker's ack of the
    message to the predictions materialisation of the successful run covering its offset;
    and messages/s to predictions (valid messages over first ack to last such event)."""
    instance = stack.instance
    done: list[tuple[int, int, float]] = []  # (start, end, predictions materialised at)
    for record in instance.get_run_records(dg.RunsFilter(statuses=[DagsterRunStatus.SUCCESS])):
        run = record.dagster_run
        if run.tags.get(TAG_TOPIC) != stack.topic or run.tags.get(TAG_PARTITION) != "0":
            continue
        events = [
            e.timestamp
            for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
            if e.dagster_event and e.dagster_event.asset_key == dg.AssetKey("predictions")
        ]
        if events:
            done.append((int(run.tags[TAG_START]), int(run.tags[TAG_END]), min(events)))
    done.sort()
    out: list[float] = []
    last = 0.0
    for message in messages:
        if not message.valid or message.offset < 0:
            continue
        times = [at for start, end, at in done if start <= message.offset < end]
        if times:
            out.append(min(times) - message.acked_at)
            last = max(last, min(times))
    first = min((m.acked_at for m in messages if m.acked_at), default=0.0)
    rate = len(out) / (last - first) if out and last > first else None
    return out, rate


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


# -- the whole scenario -------------------------------------------------------------------------
@dataclass
class Outcome:
    accounting: Accounting
    settled: Settled
    faults: FaultLog
    seconds: float  # from the first message produced to settled

    def report(self, stack: Stack, log_lines: int = 25) -> str:
        latency = ""
        if self.accounting.latencies_s:
            values = self.accounting.latencies_s
            latency = (
                f"\nproduce-to-prediction latency p50 {percentile(values, 0.5):.1f} s, "
                f"p95 {percentile(values, 0.95):.1f} s over {len(values)} valid messages; "
                f"{self.accounting.messages_per_s or 0:.1f} valid messages/s to predictions"
            )
        return (
            f"\n{self.accounting.table()}{latency}\nsettled: {self.settled.settled} after "
            f"{self.settled.seconds:.0f} s ({self.settled.reason}); scenario {self.seconds:.0f} s"
            f"\nfaults: {self.faults}\n--- daemon log (tail, routine lines left out) ---\n"
            f"{stack.daemon_log_tail(log_lines)}"
        )


def run_chaos(
    stack: Stack,
    messages: list[Message],
    *,
    produce_seconds: float,
    faults: frozenset[str] = FAULTS,
    pause_s: float = 20,
    redis_down_s: float = 20,
    settle_timeout: float = 600,
    progress: Callable[[str], None] | None = print,
) -> Outcome:
    """Produce `messages` over `produce_seconds` while the `faults` happen in turn ("kill": a
    run's worker SIGKILLed in a model step; "pause": the broker paused while a run reads its
    range; "redis": Redis stopped while a model step runs; the last two wait a bounded time
    for their moment and go ahead regardless), then settle and account."""
    errors: list[BaseException] = []

    def producing() -> None:
        try:
            produce(stack.broker, stack.topic, messages, rate=len(messages) / produce_seconds)
        except BaseException as error:  # raised below, in the caller's thread
            errors.append(error)

    started = time.monotonic()
    producer = threading.Thread(target=producing, name="chaos-producer", daemon=True)
    producer.start()
    chaos = Chaos(stack)
    if "kill" in faults:
        chaos.kill_run_mid_model_step(timeout=max(600.0, produce_seconds))
    if "pause" in faults:
        chaos.wait_for_step(("raw_text",), timeout=120)
        chaos.pause_broker(pause_s)
    if "redis" in faults:
        chaos.wait_for_step(MODEL_STEPS, timeout=120)
        chaos.stop_redis(redis_down_s)
    producer.join(timeout=produce_seconds + 300)
    if errors:
        raise errors[0]
    if producer.is_alive():
        raise TimeoutError("the producer did not finish")
    expected = {m.doc_id for m in messages if m.valid and m.doc_id}
    settled = settle(stack, expected_valid=expected, timeout=settle_timeout, progress=progress)
    seconds = time.monotonic() - started
    accounting = account(stack, messages, chaos.log)
    accounting.latencies_s, accounting.messages_per_s = latencies(stack, messages)
    return Outcome(accounting=accounting, settled=settled, faults=chaos.log, seconds=seconds)
