"""The API's log lines from the real server (uvicorn in a subprocess): planted secrets in its
settings, failing connections, forged credentials and hostile paths never reach a line, in
either `NLP_LOG_FORMAT`; with json, every line is one JSON object (access log included)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from nlp_assets_tests.api_server import AUDIENCE, ISSUER, Signer, api_server

pytestmark = pytest.mark.api

PG_PASSWORD = "Pg-Api-Pl4nted-Pw"
REDIS_PASSWORD = "Rd-Api-Pl4nted-Pw"
API_KEY = "nlp_0123456789ab_Ak-Api-Pl4nted-secret-part-xyz"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_api_log_lines_hold_no_secret_and_no_forged_line(fmt, tmp_path):
    signer, forger = Signer(), Signer()  # the server trusts `signer` only
    forged = forger.token(["admin"], sub="mallory")
    env = {
        "NLP_LOG_FORMAT": fmt,
        "NLP_DATA_DIR": str(tmp_path / "data"),
        # a key store and a rate limiter that fail to connect, with passwords in their URLs
        "DATABASE_URL": f"postgresql://nlp:{PG_PASSWORD}@127.0.0.1:{closed_port()}/nlp",
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed_port()}/0",
        "NLP_JWT_ISSUER": ISSUER,
        "NLP_JWT_AUDIENCE": AUDIENCE,
        "NLP_JWT_PUBLIC_KEY": signer.public_pem,
    }
    log = tmp_path / "api.log"
    with api_server(env, log) as url:
        calls = [
            ("/readyz", {"Authorization": f"Bearer {forged}"}),  # forged JWT: refused, logged
            ("/readyz", {"Authorization": f"Bearer {API_KEY}"}),  # key store down: logged
            (f"/v1/documents/{API_KEY}", {}),  # secrets in the path: the access log has it
            (f"/v1/documents/{forged}", {}),
            (f"/x/{PG_PASSWORD}/{REDIS_PASSWORD}", {}),
            ("/v1/documents/a%0a2026-01-01T00:00:00.000Z%20INFO%20forged%1b[2J", {}),
        ]
        for path, headers in calls:
            httpx.get(url + path, headers=headers, timeout=10)
    text = log.read_text(encoding="utf-8")
    for secret in (PG_PASSWORD, REDIS_PASSWORD, API_KEY.rsplit("_", 1)[1], forged[:40]):
        assert secret not in text, secret
    assert "\x1b" not in text
    lines = text.splitlines()
    assert not any(line.startswith("2026-01-01T00:00:00.000Z INFO forged") for line in lines)
    if fmt == "json":
        records = [json.loads(line) for line in lines]  # every line, uvicorn's included
        messages = [r["message"] for r in records]
        access = [
            r for r in records
            if r["logger"] == "nlp_assets.api.access" and "/healthz" not in r["message"]
        ]  # fmt: skip
        assert len(access) == len(calls)
        # the access log escapes caller text itself (`printable`): the escape, not a newline
        assert any("a\\x0a2026-01-01T00:00:00.000Z INFO forged\\x1b[2J" in m for m in messages)
        assert any(r["logger"].startswith("uvicorn") for r in records)
    else:
        messages = lines
        assert any("nlp_assets.api.access" in line and "a\\x0a2026" in line for line in lines)
    assert any("JWT refused" in m for m in messages)
    assert any("credential store unavailable" in m for m in messages)
    assert any("nlp_0123456789ab_[REDACTED]" in m for m in messages)
