"""The API served by uvicorn in a subprocess on a free port, for the `api` tests; a local RSA
key pair whose public half the server trusts, so tests sign their own JWTs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

REPO = Path(__file__).parents[1]
ISSUER = "https://login.example.test/"
AUDIENCE = "nlp-api"


class ServerUrl(str):
    """The server's URL, and the pid of its uvicorn process (to measure its memory)."""

    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Signer:
    """An RSA key pair: `public_pem` for the server, `token()` for the tests."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def token(
        self,
        roles: list[str],
        *,
        sub: str = "alice",
        expires_in: int = 300,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        **extra: object,
    ) -> str:
        now = int(time.time())
        claims = {"sub": sub, "iss": issuer, "aud": audience, "iat": now, "exp": now + expires_in}
        headers = {"kid": self.kid} if self.kid else None
        return jwt.encode(
            {**claims, "roles": roles, **extra}, self._key, algorithm="RS256", headers=headers
        )

    def jwk(self) -> dict:
        """The public key as a JWK (for a JWKS), with this signer's `kid`."""
        key = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {**key, "kid": self.kid, "use": "sig", "alg": "RS256"}


@contextmanager
def api_server(
    env: dict[str, str], log_path: Path, timeout_s: float = 90.0, app: str | None = None
) -> Iterator[ServerUrl]:
    """Start `uvicorn nlp_assets.api.app:create_app --factory` (or `app`); yield its URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app or "nlp_assets.api.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    url = ServerUrl(f"http://127.0.0.1:{port}")
    url.pid = process.pid
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited ({process.returncode}): {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the API did not start in {timeout_s} s: {log_path.read_text()}"
                )
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
