"""Encryption in transit (issue 23): the API served over TLS 1.3 only with a certificate from a
test CA (trustme), older versions and plaintext refused; a private PostgreSQL and a private
Redis started here with TLS only (the machine's own services are left as they are), reached
with `sslmode=verify-full` and `rediss://` from the API and from the pipeline's warehouse and
model-cache clients, with no plaintext fallback."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest
import redis
import trustme

from nlp_assets.api.config import ApiSettings
from nlp_assets.api.keys import PostgresKeyStore
from nlp_assets_tests.api_server import REPO, free_port

pytestmark = [pytest.mark.api, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def pki() -> Iterator[dict[str, Path]]:
    """A test CA and a server certificate for 127.0.0.1, in a folder the postgres user reads."""
    folder = Path(tempfile.mkdtemp(prefix="nlp-tls-"))
    folder.chmod(0o755)
    os.chown(folder, _uid("postgres"), -1)  # initdb creates its data folder in it
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key", "other_ca")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(paths["cert"]), append=i > 0)
    cert.private_key_pem.write_to_path(str(paths["key"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))  # a CA that signed nothing here
    paths["key"].chmod(0o600)
    for path in paths.values():
        os.chown(path, _uid("postgres"), -1)
    yield {**paths, "folder": folder}
    shutil.rmtree(folder, ignore_errors=True)


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _wait(check, what: str, log: Path | None = None, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            check()
            return
        except Exception as error:
            if time.monotonic() > deadline:
                tail = log.read_text()[-2000:] if log and log.exists() else ""
                raise RuntimeError(f"{what} did not start: {error}\n{tail}") from None
            time.sleep(0.3)


@pytest.fixture(scope="module")
def tls_postgres(pki) -> Iterator[dict]:
    """A private PostgreSQL that accepts TLS 1.3 connections only (pg_hba: hostssl only)."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert binaries, "PostgreSQL's initdb is missing (the postgresql package)"
    bin_dir = Path(binaries[-1]).parent
    data = pki["folder"] / "pgdata"
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
         "--no-sync"],
        check=True, capture_output=True, cwd=pki["folder"],
    )  # fmt: skip
    (data / "pg_hba.conf").write_text(
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"  # no plaintext host line
    )
    port = free_port()
    log = pki["folder"] / "postgres.log"
    process = subprocess.Popen(
        [*as_postgres, str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
         "-k", str(pki["folder"]), "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on",
         "-c", f"ssl_cert_file={pki['cert']}", "-c", f"ssl_key_file={pki['key']}",
         "-c", "ssl_min_protocol_version=TLSv1.3", "-c", "fsync=off"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=pki["folder"],
    )  # fmt: skip
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    secure = f"{url}?sslmode=verify-full&sslrootcert={pki['ca']}"
    try:
        _wait(lambda: psycopg2.connect(secure, connect_timeout=2).close(), "Postgres", log)
        yield {"url": url, "secure": secure}
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def tls_redis(pki) -> Iterator[dict]:
    """A private Redis listening on a TLS port only (no plaintext port)."""
    port = free_port()
    log = pki["folder"] / "redis.log"
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(pki["cert"]), "--tls-key-file", str(pki["key"]),
         "--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", "no",
         "--tls-protocols", "TLSv1.3", "--save", "", "--appendonly", "no"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    secure = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={pki['ca']}"
    try:
        _wait(lambda: redis.Redis.from_url(secure, socket_timeout=2).ping(), "Redis", log)
        yield {"port": port, "secure": secure}
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def tls_api(pki, tls_postgres, tls_redis, tmp_path_factory) -> Iterator[dict]:
    """`python -m nlp_assets.api.serve` over TLS, its key store in the TLS-only Postgres and its
    rate limiter in the TLS-only Redis, with NLP_API_REQUIRE_TLS."""
    root = tmp_path_factory.mktemp("tls-api")
    store = PostgresKeyStore(tls_postgres["secure"])
    _, reader = store.create("tls reader", "reader")
    port = free_port()
    env = {
        **os.environ,
        "NLP_DATA_DIR": str(root),
        "NLP_LAKE_DIR": str(root / "lake"),
        "NLP_LANDING_DIR": str(root / "landing"),
        "NLP_REPORTS_DIR": str(root / "reports"),
        "DATABASE_URL": tls_postgres["secure"],
        "REDIS_URL": tls_redis["secure"],
        "NLP_API_REDIS_PREFIX": f"nlp-tls-{uuid.uuid4().hex[:8]}",
        "NLP_API_TLS_CERT_FILE": str(pki["cert"]),
        "NLP_API_TLS_KEY_FILE": str(pki["key"]),
        "NLP_API_REQUIRE_TLS": "1",
        "KAFKA_BOOTSTRAP_SERVERS": "",
    }
    log = root / "api.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "nlp_assets.api.serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(pki["ca"]))
    try:
        _wait(lambda: httpx.get(url + "/healthz", verify=trusted).raise_for_status(), "API", log)
        yield {"url": url, "port": port, "reader": reader, "trusted": trusted}
    finally:
        process.terminate()
        process.wait(timeout=30)


def _handshake(port: int, context: ssl.SSLContext) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version() or ""


def test_the_api_is_served_over_tls_1_3_with_the_test_cas_certificate(tls_api):
    assert _handshake(tls_api["port"], tls_api["trusted"]) == "TLSv1.3"
    response = httpx.get(
        tls_api["url"] + "/readyz",
        headers={"Authorization": f"Bearer {tls_api['reader']}"},
        verify=tls_api["trusted"],
    )
    assert response.status_code == 200, response.text
    # the key store (Postgres) and the rate limiter (Redis) answered over TLS only
    assert response.json()["checks"]["postgres"] == "ok"
    assert response.json()["checks"]["redis"] == "ok"


def test_the_api_refuses_tls_1_2_plaintext_and_clients_without_the_ca(tls_api, pki):
    old = ssl.create_default_context(cafile=str(pki["ca"]))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _handshake(tls_api["port"], old)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_api['port']}/healthz", timeout=10)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls_api["url"] + "/healthz", verify=ssl.create_default_context(), timeout=10)


def test_postgres_is_reached_with_verify_full_and_never_in_plaintext(tls_postgres, pki):
    from nlp_assets.resources.warehouse import WarehouseResource

    conn = psycopg2.connect(tls_postgres["secure"])
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cursor.fetchone() == (True, "TLSv1.3")
    finally:
        conn.close()
    # the pipeline's warehouse client, as deployed: sslmode and CA as resource settings
    warehouse = WarehouseResource(
        database_url=tls_postgres["url"], sslmode="verify-full", sslrootcert=str(pki["ca"])
    )
    conn = warehouse.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cursor.fetchone() == (True,)
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(tls_postgres["url"] + "?sslmode=disable", connect_timeout=5)
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        psycopg2.connect(
            f"{tls_postgres['url']}?sslmode=verify-full&sslrootcert={pki['other_ca']}",
            connect_timeout=5,
        )


def test_redis_is_reached_over_tls_only_from_the_api_and_the_model_cache(tls_redis, pki):
    from nlp_assets.resources.model_cache import RedisCache

    assert redis.Redis.from_url(tls_redis["secure"]).ping()
    cache = RedisCache(f"rediss://127.0.0.1:{tls_redis['port']}/0", ssl_ca_certs=str(pki["ca"]))
    cache.set_many({"nlp-tls-test": b"value"})
    assert cache.get_many(["nlp-tls-test"]) == [b"value"]
    plain = redis.Redis.from_url(f"redis://127.0.0.1:{tls_redis['port']}/0", socket_timeout=3)
    with pytest.raises(redis.RedisError):
        plain.ping()
    untrusted = f"rediss://127.0.0.1:{tls_redis['port']}/0?ssl_ca_certs={pki['other_ca']}"
    with pytest.raises(redis.RedisError):
        redis.Redis.from_url(untrusted, socket_timeout=3).ping()


@pytest.mark.parametrize(
    "urls",
    [
        {"database_url": "postgresql://u@db/nlp"},
        {"database_url": "postgresql://u@db/nlp?sslmode=require"},
        {"redis_url": "redis://cache:6379/0"},
    ],
)
def test_the_api_refuses_to_start_with_a_plaintext_capable_url_when_tls_is_required(urls):
    with pytest.raises(ValueError, match="could go in plaintext"):
        ApiSettings(require_tls=True, **urls).check()
