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
from nlp_assets.kafka.messages import landing_jsonl, validate_message
from nlp_assets.kernels.ingest import doc_id_for, normalise_record

#: Landing sub-folder of a day that API submissions go to (watched by the landing sensor).
API_LANDING_DIR = "api"


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


def split_body(body: bytes, content_type: str, *, max_batch: int) -> list[bytes]:
    """One encoded record per item: NDJSON lines as they came (so a bad line is that line's
    reason), or each element of a JSON document, object or array (or ``{"documents": [...]}``).
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("application/x-ndjson", "application/ndjson", "application/jsonl", "text/plain"):
        items = [line for line in body.split(b"\n") if line.strip()]
    else:
        try:
            parsed = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BodyError("body is not valid UTF-8") from None
        except json.JSONDecodeError as error:
            reason = f"body is not valid JSON: {error.msg} at column {error.colno}"
            raise BodyError(reason) from None
        except RecursionError:
            raise BodyError("body is not valid JSON: nested too deeply") from None
        except ValueError as error:  # an integer of more than 4300 digits
            raise BodyError(f"body is not valid JSON: {error}") from None
        if isinstance(parsed, dict) and isinstance(parsed.get("documents"), list):
            parsed = parsed["documents"]
        if isinstance(parsed, dict):
            parsed = [parsed]
        if not isinstance(parsed, list):
            raise BodyError(
                f"body must be a document (JSON object), a JSON array of them or "
                f'{{"documents": [...]}}, got {type(parsed).__name__}'
            )
        items = []
        for element in parsed:
            try:
                items.append(json.dumps(element, ensure_ascii=False).encode("utf-8", "replace"))
            except (RecursionError, ValueError):
                items.append(b"\x00unencodable")  # validate_message names it
    if not items:
        raise BodyError("no documents in the body")
    if len(items) > max_batch:
        raise BodyError(
            f"{len(items)} documents in one request; send at most {max_batch} per request",
            too_large=True,
        )
    return items


def validate(items: Iterable[bytes], *, source: str, max_record_bytes: int) -> Validated:
    """Per record: accepted (with its doc_id), a duplicate of an earlier one in the same
    request, or rejected with the raw stage's reason. Never raises for a record."""
    result = Validated()
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        outcome = Outcome(index)
        result.outcomes.append(outcome)
        try:
            landed = validate_message(item, topic=source, max_bytes=max_record_bytes)
            row = normalise_record(landed, default_source=source)
            doc_id = doc_id_for(row["source"], row["source_id"], row["text"])
        except Exception as error:  # MessageError, or anything the kernel did not foresee
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


def reason_label(reason: str) -> str:
    """A reason cut to its kind (a bounded set of metric label values)."""
    head = reason.split(":", 1)[0].strip()
    return head[:40] or "unknown"


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
        name = f"{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex[:12]}.jsonl"
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
                self._producer.produce(
                    self.topic, value=line, key=doc_id.encode(), on_delivery=delivered
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
