"""Accepting documents: the raw stage's own validation, then Kafka or the landing folder.

Every record goes through `kafka.messages.validate_message` (the Kafka contract, the same
caps and reasons the raw stage applies) and gets the doc_id the pipeline will compute
(`kernels.ingest.normalise_record` + `doc_id_for`), so a re-sent document is idempotent.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nlp_assets.atomic import write_atomic
from nlp_assets.kafka.messages import HEADER_TRACEPARENT, landing_jsonl, validate_message
from nlp_assets.kernels.ingest import doc_id_for, normalise_record

#: Landing sub-folder of a day that API submissions go to (watched by the landing sensor).
API_LANDING_DIR = "api"
#: The prefix of the `source` of every document submitted through the API (`namespace`).
API_NAMESPACE = "api"
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "text/plain")


class BodyError(ValueError):
    """The request body as a whole is unusable (400), or too large (413 with `too_large`)."""

    def __init__(self, reason: str, *, too_large: bool = False):
        super().__init__(reason)
        self.too_large = too_large


@dataclass
class Outcome:
    index: int
    doc_id: str | None = None
    status: str = "accepted"  # accepted | duplicate | rejected
    reason: str | None = None
    destination: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.doc_id is not None:
            out["doc_id"] = self.doc_id
        if self.destination is not None:
            out["destination"] = self.destination
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass
class Validated:
    outcomes: list[Outcome] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # landing records to send
    sent: list[Outcome] = field(default_factory=list)  # their outcomes, same order


class ChannelRefused(PermissionError):
    """403: a record names a channel (source) the credential is not bound to."""


def _too_many(count: int, max_batch: int) -> BodyError:
    return BodyError(
        f"{count} documents in one request; send at most {max_batch} per request",
        too_large=True,
    )


def split_body(body: bytes, content_type: str, *, max_batch: int) -> list[bytes]:
    """One encoded record per item: NDJSON lines as they came (so a bad line is that line's
    reason), or each element of a JSON document, object or array (or ``{"documents": [...]}``).

    Elements of an array are cut out of the body as they were sent, one at a time, so the
    record cap stops the work at record ``max_batch + 1`` and no text is re-encoded (a lone
    surrogate stays an escape, for the raw stage's own validation to refuse). CPU-bound: call
    it off the event loop.
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind in NDJSON_TYPES:
        items = [line for line in body.split(b"\n") if line.strip()]
        if len(items) > max_batch:
            raise _too_many(len(items), max_batch)
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BodyError("body is not valid UTF-8") from None
        items = _json_items(text, max_batch)
    if not items:
        raise BodyError("no documents in the body")
    return items


_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


def _json_items(text: str, max_batch: int) -> list[bytes]:
    start = len(text) - len(text.lstrip(_SPACE))
    if text.startswith("[", start):
        return _array_items(text, start + 1, max_batch)
    parsed = _parse(text)
    if isinstance(parsed, dict) and isinstance(parsed.get("documents"), list):
        documents = parsed["documents"]
        if len(documents) > max_batch:
            raise _too_many(len(documents), max_batch)
        return [_encode(element) for element in documents]
    if isinstance(parsed, dict):
        return [text.strip(_SPACE).encode("utf-8")]
    raise BodyError(
        f"body must be a document (JSON object), a JSON array of them or "
        f'{{"documents": [...]}}, got {type(parsed).__name__}'
    )


def _array_items(text: str, at: int, max_batch: int) -> list[bytes]:
    """The elements of the array opening at `at`, each as the bytes it was sent as."""
    items: list[bytes] = []
    at = _skip(text, at)
    if text.startswith("]", at):
        _trailing(text, at + 1)
        return items
    while True:
        try:
            _, end = _DECODER.raw_decode(text, at)
        except json.JSONDecodeError as error:
            raise BodyError(
                f"body is not valid JSON: {error.msg} at column {error.colno}"
            ) from None
        except RecursionError:
            raise BodyError("body is not valid JSON: nested too deeply") from None
        except ValueError as error:  # an integer of more than 4300 digits
            raise BodyError(f"body is not valid JSON: {error}") from None
        items.append(text[at:end].encode("utf-8"))
        if len(items) > max_batch:
            raise BodyError(
                f"more than {max_batch} documents in one request; send at most {max_batch} "
                "per request",
                too_large=True,
            )
        at = _skip(text, end)
        if text.startswith("]", at):
            _trailing(text, at + 1)
            return items
        if not text.startswith(",", at):
            raise BodyError(f"body is not valid JSON: expected ',' or ']' at offset {at}")
        at = _skip(text, at + 1)


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def _trailing(text: str, at: int) -> None:
    if _skip(text, at) != len(text):
        raise BodyError("body is not valid JSON: extra data after the array")


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BodyError(f"body is not valid JSON: {error.msg} at column {error.colno}") from None
    except RecursionError:
        raise BodyError("body is not valid JSON: nested too deeply") from None
    except ValueError as error:  # an integer of more than 4300 digits
        raise BodyError(f"body is not valid JSON: {error}") from None


def _encode(element: Any) -> bytes:
    try:  # ASCII escapes: a lone surrogate stays visible to validation, never replaced
        return json.dumps(element).encode("ascii")
    except (RecursionError, ValueError):
        return b"\x00unencodable"  # validate_message names it


def namespace(channel: str) -> str:
    """The `source` a document submitted through the API for `channel` lands with: its doc_id
    hashes this, so no API caller can take the doc id of a landing file's or a Kafka
    producer's record, and two channels never share one."""
    return f"{API_NAMESPACE}:{channel}"


def validate(
    items: Iterable[bytes],
    *,
    source: str,
    max_record_bytes: int,
    channels: tuple[str, ...] = (),
) -> Validated:
    """Per record: accepted (with its doc_id), a duplicate of an earlier one in the same
    request, or rejected with the raw stage's reason. Never raises for a record; raises
    `ChannelRefused` (the whole request is refused) when a record names a channel outside
    `channels` (the credential's; empty: only `source`, the server's default channel)."""
    allowed = channels or (source,)
    result = Validated()
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        outcome = Outcome(index)
        result.outcomes.append(outcome)
        try:
            landed = validate_message(item, topic=allowed[0], max_bytes=max_record_bytes)
        except Exception as error:  # MessageError, or anything the kernel did not foresee
            outcome.status, outcome.reason = "rejected", str(error) or type(error).__name__
            continue
        claimed = landed.get("source")
        if claimed not in allowed:
            shown = claimed if isinstance(claimed, str) else type(claimed).__name__
            raise ChannelRefused(
                f"record {index}: your credential may not submit to channel {shown[:64]!r} "
                f"(it may submit to: {', '.join(allowed)})"
            )
        landed["source"] = namespace(claimed)
        try:
            row = normalise_record(landed, default_source=landed["source"])
            doc_id = doc_id_for(row["source"], row["source_id"], row["text"])
        except Exception as error:
            outcome.status, outcome.reason = "rejected", str(error) or type(error).__name__
            continue
        outcome.doc_id = doc_id
        if doc_id in seen:
            outcome.status = "duplicate"
            outcome.reason = f"same doc_id as record {seen[doc_id]} of this request"
            continue
        seen[doc_id] = index
        result.records.append(landed)
        result.sent.append(outcome)
    return result


#: Every value the `reason` label of `nlp_api_rejections_total` can take (by first match).
REASON_LABELS: tuple[tuple[str, str], ...] = (
    ("oversized", "oversized"),
    ("empty message", "empty message"),
    ("not valid UTF-8", "not valid UTF-8"),
    ("invalid JSON", "invalid JSON"),
    ("message must be a JSON object", "not a JSON object"),
    ("missing required field", "missing required field(s)"),
    ("invalid timestamp", "invalid timestamp"),
    ("record cannot be landed", "not landable"),
    ("field 'text' is empty", "blank text"),
    ("field ", "wrong field type"),
)
OTHER_REASON = "invalid record"


def reason_label(reason: str) -> str:
    """A record's reason as one of a fixed set of label values (never the caller's text)."""
    for prefix, label in REASON_LABELS:
        if reason.startswith(prefix):
            return label
    return OTHER_REASON


class SinkUnavailable(RuntimeError):
    """The documents could not be handed on (503: nothing was accepted, send again)."""


class LandingSink:
    """`<landing>/<today UTC>/api/<uuid>.jsonl`, written to a dot-file then renamed, so the
    landing sensor (which ignores dot-files) never sees half a part."""

    name = "landing"

    def __init__(self, root: str):
        self.root = Path(root)

    def send(self, records: list[dict[str, Any]], ids: list[str]) -> str:
        day = datetime.now(UTC).date().isoformat()
        folder = self.root / day / API_LANDING_DIR
        # parts sort by the server's clock (to the microsecond), so of two copies of a doc id
        # the raw stage keeps the one accepted first: nothing a caller sends decides it
        name = f"{datetime.now(UTC):%H%M%S%f}-{uuid.uuid4().hex[:12]}.jsonl"
        try:
            write_atomic(folder / name, landing_jsonl(records), fsync=True)
        except OSError as error:
            raise SinkUnavailable(f"landing folder not writable: {error.strerror}") from None
        return f"landing:{day}/{API_LANDING_DIR}/{name}"

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise OSError(f"landing folder {self.root} is not writable")


class KafkaSink:
    """The topic the Kafka sensor reads; key = doc_id, value = the landing line."""

    name = "kafka"

    def __init__(self, config: dict[str, Any], topic: str, timeout_s: float = 10.0):
        from confluent_kafka import Producer

        self.topic, self.timeout_s = topic, timeout_s
        self._config = config
        self._producer = Producer(config | {"enable.idempotence": True, "acks": "all"})

    def send(self, records: list[dict[str, Any]], ids: list[str]) -> str:
        errors: list[str] = []

        def delivered(error, _message) -> None:
            if error is not None:
                errors.append(str(error))

        try:
            for record, doc_id in zip(records, ids, strict=True):
                line = landing_jsonl([record]).rstrip(b"\n")
                traceparent = record.get("traceparent")
                self._producer.produce(
                    self.topic,
                    value=line,
                    key=doc_id.encode(),
                    headers=[(HEADER_TRACEPARENT, traceparent.encode())] if traceparent else None,
                    on_delivery=delivered,
                )
                self._producer.poll(0)
        except (BufferError, Exception) as error:
            raise SinkUnavailable(f"Kafka refused the batch: {error}") from None
        left = self._producer.flush(self.timeout_s)
        if left or errors:
            raise SinkUnavailable(
                f"Kafka did not confirm {left + len(errors)} of {len(records)} documents "
                f"({errors[0] if errors else 'timed out'}); send them again (idempotent)"
            )
        return f"kafka:{self.topic}"

    def check(self) -> None:
        from confluent_kafka.admin import AdminClient

        AdminClient(self._config).list_topics(timeout=2.0)
