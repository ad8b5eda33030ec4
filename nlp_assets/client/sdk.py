"""The Python SDK of the API (httpx): the API's verbs, typed results, retries on 429/503.

    from nlp_assets.client import Client

    with Client("http://127.0.0.1:8080", api_key=os.environ["NLP_API_KEY"]) as nlp:
        receipt = nlp.submit([{"id": "1", "text": "Great service!"}])
        status = nlp.status(receipt.accepted[0].doc_id)

`NLP_API_URL` and `NLP_API_KEY` are the defaults of `url` and `api_key` (a JWT works too).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
RETRY_STATUSES = {429, 502, 503, 504}
FORMATS = {
    "json": "application/json",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}


# errors ----------------------------------------------------------------------------------
class ApiError(Exception):
    """An answer the caller must act on; `str()` says what to fix."""

    status: int = 0

    def __init__(self, message: str, *, status: int = 0, body: Any = None):
        super().__init__(message)
        self.status = status or self.status
        self.body = body


class AuthenticationError(ApiError):
    status = 401


class PermissionDenied(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413


class RateLimited(ApiError):
    status = 429


class Unavailable(ApiError):
    status = 503


class RequestRejected(ApiError):
    """400/422: the request (or every record of it) broke the contract."""


def _detail(response: httpx.Response) -> tuple[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300], None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        detail = "; ".join(
            f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail
        )
    return str(detail if detail is not None else body)[:500], body


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    message, body = _detail(response)
    status = response.status_code
    hints = {
        401: (AuthenticationError, "set NLP_API_KEY (or --key) to a valid API key or JWT"),
        403: (PermissionDenied, "ask an operator for a key with the role this endpoint needs"),
        404: (NotFound, ""),
        413: (PayloadTooLarge, "send smaller requests (Client.submit(batch_size=...))"),
        429: (RateLimited, "slow down, or ask for a higher rate limit"),
        503: (Unavailable, "a service behind the API is down; retry later"),
    }
    kind, hint = hints.get(status, (RequestRejected if status in (400, 406, 422) else ApiError, ""))
    text = f"{status} {message}" + (f" ({hint})" if hint else "")
    raise kind(text, status=status, body=body)


# results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entity:
    text: str
    label: str
    start_char: int | None = None
    end_char: int | None = None


@dataclass(frozen=True)
class Prediction:
    doc_id: str
    day: str | None
    source: str | None
    language: str | None
    sentiment_label: str | None
    sentiment_score: float | None
    sentiment_model: str | None
    ner_model: str | None
    entities: list[Entity]
    skipped_reason: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Prediction:
        def model(name: str) -> str | None:
            value, version = row.get(name), row.get(f"{name}_version")
            return f"{value}@{version}" if value and version else value

        return cls(
            doc_id=row["doc_id"],
            day=row.get("ingest_date"),
            source=row.get("source"),
            language=row.get("lang"),
            sentiment_label=row.get("sentiment_label"),
            sentiment_score=row.get("sentiment_score"),
            sentiment_model=model("sentiment_model"),
            ner_model=model("ner_model"),
            entities=[
                Entity(**{k: e.get(k) for k in ("text", "label", "start_char", "end_char")})
                for e in row.get("entities") or []
            ],
            skipped_reason=row.get("skipped_reason"),
            raw=dict(row),
        )


@dataclass(frozen=True)
class Receipt:
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    doc_id: str | None = None
    destination: str | None = None
    reason: str | None = None


@dataclass
class SubmitResult:
    accepted: list[Receipt] = field(default_factory=list)
    duplicates: list[Receipt] = field(default_factory=list)
    rejected: list[Receipt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected


@dataclass(frozen=True)
class DocumentStatus:
    doc_id: str
    status: Literal["accepted", "processed", "quarantined"]
    day: str | None = None
    prediction: Prediction | None = None
    reason: str | None = None
    stage: str | None = None
    destination: str | None = None  # accepted: kafka:<topic> or landing:<day>/api/<part>
    accepted_at: str | None = None  # accepted: when (ISO 8601, UTC)
    trace_id: str | None = None  # processed: the document's trace (docs/monitoring.md)
    runs: tuple[str, ...] = ()  # processed: the Dagster runs that wrote its day and part


@dataclass(frozen=True)
class BackfillLaunched:
    backfill_id: str
    partitions: list[str]
    run_ids: list[str]


@dataclass(frozen=True)
class RunStatus:
    id: str
    kind: Literal["run", "backfill"]
    status: str
    finished: bool
    succeeded: bool
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


# the client ------------------------------------------------------------------------------
class Client:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = (url or os.getenv("NLP_API_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.getenv("NLP_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # transport with retries ------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                if attempt >= self.retries:
                    raise Unavailable(
                        f"cannot reach the API at {self.url}: {type(error).__name__} "
                        "(is it running? set NLP_API_URL or --url)"
                    ) from None
                response = None
            if response is not None and response.status_code not in RETRY_STATUSES:
                _raise_for(response)
                return response
            if attempt >= self.retries:
                assert response is not None
                _raise_for(response)
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            if response is not None and response.headers.get("retry-after", "").isdigit():
                wait = min(self.max_backoff_s, max(wait, float(response.headers["retry-after"])))
            time.sleep(wait)
            attempt += 1

    # verbs -------------------------------------------------------------------------------
    def submit(
        self,
        documents: Mapping[str, Any] | Iterable[Mapping[str, Any]],
        *,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> SubmitResult:
        """Send documents in batches; each record's receipt (index across all batches)."""
        docs = [documents] if isinstance(documents, Mapping) else documents
        lines = (json.dumps(d, ensure_ascii=False).encode("utf-8") for d in docs)
        return self.submit_lines(lines, batch_size=batch_size, progress=progress)

    def submit_lines(
        self,
        lines: Iterable[bytes],
        *,
        batch_size: int = 500,
        max_batch_bytes: int = 4 * 1024 * 1024,
        progress: Callable[[int], None] | None = None,
    ) -> SubmitResult:
        """Send NDJSON lines as they are (a bad line gets its own reason) in batches."""
        result = SubmitResult()
        batch: list[bytes] = []
        size = offset = 0

        def flush() -> None:
            nonlocal batch, size, offset
            if not batch:
                return
            response = self._post_batch(b"\n".join(batch) + b"\n")
            for entry in response["results"]:
                receipt = Receipt(**{**entry, "index": entry["index"] + offset})
                {"accepted": result.accepted, "duplicate": result.duplicates}.get(
                    receipt.status, result.rejected
                ).append(receipt)
            if progress:
                progress(len(batch))
            offset += len(batch)
            batch, size = [], 0

        for line in lines:
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            if batch and (len(batch) >= batch_size or size + len(line) + 1 > max_batch_bytes):
                flush()
            batch.append(line)
            size += len(line) + 1
        flush()
        return result

    def _post_batch(self, body: bytes) -> dict[str, Any]:
        try:
            response = self._request(
                "POST",
                "/v1/documents",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
        except RequestRejected as error:
            if isinstance(error.body, dict) and "results" in error.body:
                return error.body  # 422: every record of the batch refused, each with a reason
            raise
        return response.json()

    def status(self, doc_id: str) -> DocumentStatus:
        """Processed (with its prediction), quarantined (with the reason) or accepted (sent on,
        not yet processed); `NotFound` when the API knows none of these."""
        body = self._request("GET", f"/v1/documents/{doc_id}").json()
        prediction = body.get("prediction")
        return DocumentStatus(
            doc_id=body["doc_id"],
            status=body["status"],
            day=body.get("day"),
            prediction=Prediction.from_json(prediction) if prediction else None,
            reason=body.get("reason"),
            stage=body.get("stage"),
            destination=body.get("destination"),
            accepted_at=body.get("accepted_at"),
            trace_id=body.get("trace_id"),
            runs=tuple(body.get("runs") or ()),
        )

    def predictions(
        self,
        day: str | date,
        *,
        source: str | None = None,
        language: str | None = None,
        label: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[Prediction]:
        """Every prediction of a day (fetched page by page)."""
        params: dict[str, Any] = {
            k: v
            for k, v in {"source": source, "language": language, "label": label}.items()
            if v is not None
        }
        offset: int | None = 0
        while offset is not None:
            page = self._request(
                "GET",
                f"/v1/days/{day}/predictions",
                params={**params, "limit": page_size, "offset": offset},
            ).json()
            for row in page["items"]:
                yield Prediction.from_json(row)
            offset = page["next_offset"]

    def download(
        self,
        what: Literal["predictions", "aggregates"],
        day: str | date,
        fmt: Literal["json", "csv", "parquet"],
        sink: Callable[[bytes], object],
        *,
        progress: Callable[[int, int | None], None] | None = None,
        **filters: str | None,
    ) -> int:
        """Stream a day's file (csv or parquet; json is one page of up to the page cap) into
        `sink`; returns the bytes written."""
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        params = {k: v for k, v in filters.items() if v is not None}
        if fmt == "json" and what == "predictions":
            rows = [p.raw for p in self.predictions(day, **params)]  # type: ignore[arg-type]
            data = json.dumps(rows, ensure_ascii=False).encode("utf-8")
            sink(data)
            if progress:
                progress(len(data), len(data))
            return len(data)
        written = 0
        with self._http.stream(
            "GET",
            f"/v1/days/{day}/{what}",
            params=params,
            headers={"Accept": FORMATS[fmt]},
        ) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            total = response.headers.get("content-length")
            for chunk in response.iter_bytes():
                sink(chunk)
                written += len(chunk)
                if progress:
                    progress(written, int(total) if total else None)
        return written

    def aggregates(self, day: str | date) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/days/{day}/aggregates").json()["items"]

    def report(self, day: str | date) -> str:
        return self._request("GET", f"/v1/days/{day}/report").text

    def backfill(self, start: str | date, end: str | date) -> BackfillLaunched:
        body = self._request(
            "POST", "/v1/backfills", json={"from": str(start), "to": str(end)}
        ).json()
        return BackfillLaunched(body["backfill_id"], body["partitions"], body["run_ids"])

    def run(self, run_id: str) -> RunStatus:
        body = self._request("GET", f"/v1/runs/{run_id}").json()
        return RunStatus(
            body["id"], body["kind"], body["status"], body["finished"], body["succeeded"], body
        )

    def wait_for_run(
        self,
        run_id: str,
        *,
        timeout_s: float = 3600.0,
        poll_s: float = 5.0,
        on_poll: Callable[[RunStatus], None] | None = None,
    ) -> RunStatus:
        """Poll a run or backfill until it finishes; `TimeoutError` names its last state."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.run(run_id)
            if on_poll:
                on_poll(state)
            if state.finished:
                return state
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{state.kind} {run_id} still {state.status} after {timeout_s:g} s"
                )
            time.sleep(poll_s)

    def ready(self) -> dict[str, Any]:
        """The /readyz checks (200 or 503 alike)."""
        response = self._http.get("/readyz")
        if response.status_code not in (200, 503):
            _raise_for(response)
        return response.json()
