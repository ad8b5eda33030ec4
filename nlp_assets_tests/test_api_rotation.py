"""Credentials that expire and rotate (issue 23): API keys with an expiry, `nlp keys rotate`
(a successor, the old key valid for a stated overlap, then refused), and JWT signing keys
rotated through the JWKS `kid` (the old key refused once it leaves the set). Against the API
served by uvicorn, a JWKS served over HTTP on 127.0.0.1, Redis, and the Postgres key store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis

from nlp_assets.api.keys import FileKeyStore, PostgresKeyStore
from nlp_assets_tests.api_server import AUDIENCE, ISSUER, REPO, Signer, api_server
from nlp_assets_tests.postgres_db import temp_database, url_for

pytestmark = [pytest.mark.api, pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"


class Jwks:
    """A JWKS endpoint on 127.0.0.1 whose key set a test changes (the identity provider)."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def rotation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("rotation")
    jwks = Jwks()
    prefix = f"nlp-rotation-{uuid.uuid4().hex[:8]}"
    env = {
        "NLP_DATA_DIR": str(root),
        "NLP_LAKE_DIR": str(root / "lake"),
        "NLP_LANDING_DIR": str(root / "landing"),
        "NLP_REPORTS_DIR": str(root / "reports"),
        "NLP_API_KEYS_FILE": str(root / "keys.json"),
        "DATABASE_URL": "",
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "REDIS_URL": REDIS_URL,
        "NLP_API_REDIS_PREFIX": prefix,
        "NLP_API_KEY_CACHE_SECONDS": "0",
        "NLP_JWT_ISSUER": ISSUER,
        "NLP_JWT_AUDIENCE": AUDIENCE,
        "NLP_JWT_JWKS_URL": jwks.url,
        "NLP_JWT_JWKS_CACHE_SECONDS": "0",
    }
    try:
        with api_server(env, root / "api.log") as url:
            yield {"url": url, "env": env, "jwks": jwks, "store": FileKeyStore(root / "keys.json")}
    finally:
        jwks.server.shutdown()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


def _status(rotation, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(rotation["url"] + "/readyz", headers=headers, timeout=30).status_code


def _nlp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nlp_assets.client.cli", *args],
        capture_output=True,
        env={**os.environ, **env},
        cwd=REPO,
        timeout=120,
    )


def test_an_api_key_works_until_it_expires_then_is_refused(rotation):
    store = rotation["store"]
    _, live = store.create("live", "reader", expires_at=datetime.now(UTC) + timedelta(hours=1))
    _, expired = store.create("old", "reader", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert _status(rotation, live) == 200
    response = httpx.get(
        rotation["url"] + "/readyz", headers={"Authorization": f"Bearer {expired}"}
    )
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_nlp_keys_create_sets_an_expiry(rotation):
    created = _nlp(
        rotation["env"], "keys", "create", "--name", "temp", "--role", "reader",
        "--expires-in-days", "2",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = created.stdout.decode().strip()
    assert _status(rotation, token) == 200
    listed = json.loads(_nlp(rotation["env"], "keys", "list", "--json").stdout)
    key = next(k for k in listed if token.startswith(f"nlp_{k['key_id']}_"))
    left = datetime.fromisoformat(key["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=1, hours=23) < left <= timedelta(days=2)


def test_nlp_keys_rotate_keeps_the_old_key_for_the_overlap_then_refuses_it(rotation):
    old_key, old = rotation["store"].create("rotated", "submitter", channels=["web"])
    overlap_s = 3
    rotated = _nlp(
        rotation["env"], "keys", "rotate", old_key.key_id,
        "--overlap-hours", str(overlap_s / 3600),
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.decode().strip()
    assert new.startswith("nlp_") and new != old
    assert f"{old_key.key_id} keeps working until" in rotated.stderr.decode()
    # during the overlap both work, and the successor has the same role and channels
    assert _status(rotation, old) == 200 and _status(rotation, new) == 200
    successor = next(k for k in rotation["store"].list() if new.startswith(f"nlp_{k.key_id}_"))
    assert (successor.name, successor.role, successor.channels) == (
        "rotated",
        "submitter",
        ("web",),
    )
    # after it, the old key is refused and the successor still works
    old_now = next(k for k in rotation["store"].list() if k.key_id == old_key.key_id)
    assert old_now.expires_at is not None
    end = datetime.fromisoformat(old_now.expires_at)
    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 1.1)
    assert _status(rotation, old) == 401
    assert _status(rotation, new) == 200


def test_rotating_an_unknown_or_revoked_key_is_refused_with_the_reason(rotation):
    missing = _nlp(rotation["env"], "keys", "rotate", "000000000000")
    assert missing.returncode == 4 and "no API key" in missing.stderr.decode()
    key, _ = rotation["store"].create("gone", "reader")
    rotation["store"].revoke(key.key_id)
    revoked = _nlp(rotation["env"], "keys", "rotate", key.key_id)
    assert revoked.returncode == 2 and "revoked or expired" in revoked.stderr.decode()


def test_jwt_signing_keys_rotate_through_the_jwks_kid(rotation):
    jwks = rotation["jwks"]
    first, second = Signer(kid="k1"), Signer(kid="k2")
    jwks.keys = [first.jwk()]
    assert _status(rotation, first.token(["reader"])) == 200
    assert _status(rotation, second.token(["reader"])) == 401  # not published yet
    jwks.keys = [first.jwk(), second.jwk()]  # the overlap: both published
    assert _status(rotation, first.token(["reader"])) == 200
    assert _status(rotation, second.token(["reader"])) == 200
    jwks.keys = [second.jwk()]  # the old key leaves the set
    response = httpx.get(
        rotation["url"] + "/readyz",
        headers={"Authorization": f"Bearer {first.token(['reader'])}"},
    )
    assert response.status_code == 401
    assert "unknown signing key" in response.json()["detail"]
    assert _status(rotation, second.token(["reader"])) == 200
    # a token naming a published kid but signed by another key is refused too
    forged = Signer(kid="k2").token(["operator"])
    assert _status(rotation, forged) == 401


@pytest.mark.postgres
def test_the_postgres_key_store_expires_and_rotates_keys():
    with temp_database("nlp_rotation") as database:
        store = PostgresKeyStore(url_for(database))
        key, token = store.create("pg", "operator", channels=["web"])
        old, successor, new_token = store.rotate(key.key_id, timedelta(hours=1))
        assert store.verify(token).active and store.verify(new_token).active  # type: ignore[union-attr]
        assert old.expires_at is not None
        left = datetime.fromisoformat(old.expires_at) - datetime.now(UTC)
        assert timedelta(minutes=59) < left <= timedelta(hours=1)
        assert (successor.role, successor.channels, successor.expires_at) == (
            "operator",
            ("web",),
            None,
        )
        store.rotate(successor.key_id, timedelta(0))
        assert not store.verify(new_token).active  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="revoked or expired"):
            store.rotate(successor.key_id, timedelta(hours=1))


def test_a_key_store_file_never_holds_a_token(rotation, tmp_path: Path):
    store = FileKeyStore(tmp_path / "keys.json")
    key, token = store.create("x", "reader")
    _, _, new = store.rotate(key.key_id, timedelta(hours=1))
    text = (tmp_path / "keys.json").read_text()
    assert token not in text and new not in text
