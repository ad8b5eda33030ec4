"""A local S3 for the `s3` tests: moto's standalone server (moto 5.2.6) on 127.0.0.1.

It is a stand-in for Amazon S3, not S3: objects live in the server's memory, any credentials
are accepted, and only the behaviour the lake relies on is checked by the tests (PUT, GET,
LIST, DELETE, and conditional PUT: If-None-Match: * refuses an existing key with 412, If-Match
an ETag that changed). S3 performs a conditional PUT atomically; moto checks the condition and
then stores the object in two steps, and its server answers requests on several threads, so two
racing PUTs of one key could in principle both pass the check. The server is therefore started
through `main` below, which is moto's own `moto.server.main` with its WSGI application answering
one request at a time: the check and the store are then one step, as on S3.

The session fixture `s3_server` starts it as a process on a free port and kills it at the end;
`s3_lake` gives a test its own bucket and sets the standard AWS_* variables that both delta-rs
and s3fs read (nothing else configures the lake's S3 access). When the server cannot start, the
tests FAIL with the reason; they never skip.

Run by hand: `python -m nlp_assets_tests.s3_server --port 5000`.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nlp_assets_tests.services import free_port, stop_process_group, wait_for_http

START_TIMEOUT_S = 30
#: moto accepts any key pair; these are not secrets.
ACCESS_KEY = "moto-test-key"
SECRET_KEY = "moto-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    process: subprocess.Popen

    @property
    def environment(self) -> dict[str, str]:
        """The variables a lake process needs for this server (delta-rs and s3fs read them)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ALLOW_HTTP": "true",  # delta-rs refuses a plain-http endpoint without it
        }

    def client(self) -> Any:
        """A boto3 S3 client of the server (bucket set-up and inspection in tests)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self, prefix: str = "lake") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def moto_s3(log_dir: Path) -> Iterator[S3Server]:
    """moto's S3 server on a free port of 127.0.0.1 (see the module docstring); killed after."""
    port = free_port()
    log = (log_dir / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "nlp_assets_tests.s3_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{endpoint}/", process, START_TIMEOUT_S)
        yield S3Server(endpoint, process)
    finally:
        stop_process_group(process)
        log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        started = moto_s3(tmp_path_factory.mktemp("moto"))
        server = started.__enter__()
    except Exception as error:  # fail, never skip: the server is part of the test
        pytest.fail(f"cannot start moto's S3 server: {error}", pytrace=False)
    try:
        yield server
    finally:
        started.__exit__(None, None, None)


@pytest.fixture
def s3_lake(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket's lake root (`s3://<bucket>/lake`), with the AWS_* variables of the
    server set for this test (processes it starts inherit them)."""
    for name, value in s3_server.environment.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    return f"s3://{s3_server.create_bucket()}/lake"


def main(argv: list[str] | None = None) -> None:
    """moto's standalone server (`moto.server.main`), answering one request at a time."""
    import moto.server
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    class OneRequestAtATime(DomainDispatcherApplication):
        _lock = threading.Lock()

        def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
            with self._lock:
                body = super().__call__(environ, start_response)
                try:
                    return [b"".join(body)]
                finally:
                    close = getattr(body, "close", None)
                    if close is not None:
                        close()

    moto.server.DomainDispatcherApplication = OneRequestAtATime  # type: ignore[misc]
    moto.server.main(argv)


if __name__ == "__main__":
    main()
