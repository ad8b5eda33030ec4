"""Serve the API with uvicorn; over TLS 1.3 only when NLP_API_TLS_CERT_FILE and
NLP_API_TLS_KEY_FILE are set (older protocol versions are refused in the handshake).

    python -m nlp_assets.api.serve --host 0.0.0.0 --port 8443

uvicorn's own flags cannot set a minimum TLS version, so the server is built here and its SSL
context tightened before it listens. Behind an ingress that terminates TLS, `make api`
(plain uvicorn) is enough inside the cluster network.
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Sequence

import uvicorn

from nlp_assets.api.config import ApiSettings


def build_server(config: ApiSettings, host: str, port: int) -> uvicorn.Server:
    tls = bool(config.tls_cert_file and config.tls_key_file)
    server_config = uvicorn.Config(
        "nlp_assets.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        access_log=False,  # the app's own access log escapes caller text
        ssl_certfile=config.tls_cert_file if tls else None,
        ssl_keyfile=config.tls_key_file if tls else None,
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
    )
    server_config.load()
    if tls:
        assert server_config.ssl is not None
        server_config.ssl.minimum_version = ssl.TLSVersion.TLSv1_3
    return uvicorn.Server(server_config)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    config = ApiSettings.from_env()
    config.check()
    build_server(config, args.host, args.port).run()


if __name__ == "__main__":
    main()
