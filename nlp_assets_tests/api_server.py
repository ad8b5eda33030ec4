"""The API served by uvicorn in a subprocess on a free port, for the `api` tests; a local RSA
key pair whose public half the server trusts, so tests sign their own JWTs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

REPO = Path(__file__).parents[1]
ISSUER = "https://login.example.test/"
AUDIENCE = "nlp-api"


def image_requirements(*extras: str) -> list[str]:
    """The requirements of pyproject.toml's `extras` (what deploy/Dockerfile's `api` target
    installs)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    optional = pyproject["project"]["optional-dependencies"]
    return [requirement for extra in extras for requirement in optional[extra]]


def requirement_closure(requirements: list[str]) -> set[str]:
    """Every distribution these requirements install (extras followed, markers evaluated)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        seen.add(name)
        for raw in metadata.requires(requirement.name) or []:
            child = Requirement(raw)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras):
                todo.append(child)
    return {key for key in seen if "[" not in key}


def image_site_packages(tmp: Path, distributions: set[str]) -> Path:
    """A site-packages folder holding only `distributions` (links to this environment's
    files): with `python -S` and `site.addsitedir` on it, a process sees what an image that
    installs only those would, and an import of anything else fails as it would there."""
    site = tmp / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    for name in sorted(distributions):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for top in {file.parts[0] for file in dist.files or []}:
            source = Path(str(dist.locate_file(top)))
            if top in {"..", "__pycache__"} or not source.exists():
                continue
            if not (site / top).exists():
                (site / top).symlink_to(source)
    # this package, installed editable (`make setup`): its path hook maps nlp_assets.resources
    # and nlp_assets.sensors onto resources/ and sensors/
    for hook in Path(sysconfig.get_paths()["purelib"]).glob("__editable__*nlp_assets*"):
        if not (site / hook.name).exists():
            (site / hook.name).symlink_to(hook)
    return site


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
