"""What every request passes before routing: a body cap per route, enforced while the body
streams in (before anything parses it), no anonymous work, and no control characters in the
path or query. A pure ASGI middleware: it never buffers a body.

FastAPI reads and validates a JSON body before any dependency runs, so without this an
anonymous caller could make the server buffer and parse any amount of JSON and be answered
401 only afterwards (24 MiB cost 633 MB).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")


def printable(text: str, limit: int = 200) -> str:
    """`text` for a log line: control characters (newlines, escapes, NUL) as `\\xNN`, cut to
    `limit`, so nothing a caller sends can forge or garble a log line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text[:limit])


class Guard:
    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        body_cap: Callable[[str, str], int],
        public: frozenset[str],
        on_refusal: Callable[[str], None] = lambda _reason: None,
    ):
        self.app, self.body_cap, self.public, self.on_refusal = app, body_cap, public, on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        query = unquote_to_bytes(scope.get("query_string", b""))
        if _CONTROL.search(path) or _CONTROL_BYTES.search(query):
            await _answer(send, 400, "control characters are not allowed in the path or query")
            return
        headers = dict(scope["headers"])
        if path not in self.public and not (
            headers.get(b"authorization") or headers.get(b"x-api-key")
        ):
            self.on_refusal("unauthenticated")
            await _answer(
                send,
                401,
                "no credential: send 'Authorization: Bearer <API key or JWT>' "
                "(create a key with `nlp keys create`)",
                {"www-authenticate": "Bearer"},
            )
            return
        cap = self.body_cap(scope["method"], path)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            self.on_refusal("body too large")
            await _answer(send, 413, f"body over {cap} bytes; send at most {cap} per request")
            return
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    self.on_refusal("body too large")
                    raise HTTPException(
                        413, f"body over {cap} bytes; send at most {cap} per request"
                    )
            return message

        await self.app(scope, capped, send)


async def _answer(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    # the body was not read: the connection is closed rather than drained
    raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
