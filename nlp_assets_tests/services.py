"""Real services the observability tests start and stop: Pushgateway, a webhook receiver.

A missing binary fails the test (CI installs it; see `.ci/run`), it never skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

PUSHGATEWAY_BIN = "/usr/bin/prometheus-pushgateway"
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen | None = None, timeout: float = 30) -> None:
    """Until `url` answers 200; raise with the reason when it never does or the process died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as error:
            last = error
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s: {last}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group the test started (it was started with
    `start_new_session=True`), wait for it, then SIGKILL whatever of the group is left."""
    pgid = process.pid
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        process.poll()  # reap the leader so its group can empty
        time.sleep(0.5)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=timeout)


@contextmanager
def pushgateway(tmp: Path) -> Iterator[str]:
    """A real Pushgateway on a free port (no persistence); yields its base URL."""
    binary = shutil.which("prometheus-pushgateway") or PUSHGATEWAY_BIN
    if not Path(binary).exists():
        raise RuntimeError(
            f"{PUSHGATEWAY_BIN} is missing: install Debian's prometheus-pushgateway (.ci/run does)"
        )
    port = free_port()
    log = (tmp / "pushgateway.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/-/ready", process, START_TIMEOUT_S)
        yield url
    finally:
        stop_process_group(process)
        log.close()


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a `/metrics` page: (name, labels) -> value.

    The empty `instance` label a Pushgateway adds to pushed groups is left out.
    """
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(i for i in sample.labels.items() if i != ("instance", ""))): (
            sample.value
        )
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series(samples: dict, name: str, **labels: str) -> dict[frozenset, float]:
    """The samples of one metric whose labels include `labels`."""
    want = set(labels.items())
    return {
        key_labels: value
        for (key_name, key_labels), value in samples.items()
        if key_name == name and want <= key_labels
    }


class WebhookReceiver:
    """A local HTTP server that records the JSON bodies POSTed to it and the status it
    answered each with: `status`, or `fail_status` for the first `fail_first` posts."""

    def __init__(
        self, status: int = 200, *, fail_first: int = 0, fail_status: int = 500, path: str = "/hook"
    ) -> None:
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.headers.append(dict(self.headers))
                answer = fail_status if len(receiver.statuses) < fail_first else status
                receiver.statuses.append(answer)
                self.send_response(answer)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def model_server(
    tmp: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The real model server (`nlp serve-models`) on a free port, ready (its default models
    loaded and warm); yields its base URL and process (a test may SIGKILL it)."""
    import sys

    port = free_port()
    log = (tmp / f"model-server-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "nlp_assets.client.cli", "serve-models", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/readyz", process, 120)
        yield url, process
    finally:
        if process.poll() is None:
            stop_process_group(process)
        log.close()
