"""Traces: OpenTelemetry, configured by the standard `OTEL_*` variables and nothing else.

On in a process when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, unless
`OTEL_SDK_DISABLED=true`; `configure()` installs the SDK's tracer provider with the OTLP
exporter the protocol variable names (gRPC by default, `http/protobuf` too). Off, every span here
is OpenTelemetry's non-recording span: nothing is built or sent.

How a document's path is one trace (docs/monitoring.md "Find a document"):
- it arrives with a W3C `traceparent` (the API's submit span, a Kafka header, a landing file's
  `traceparent` field) kept in the `raw_text` and `cleaned_text` rows; `predictions` keeps
  its `trace_id`;
- a sensor tick's span goes into the run's tags (`TRACEPARENT_TAG`), so every step of the run
  is a child of the tick that planned it (a run without the tag: trace id = run id);
- a step's span links each document's trace (batch consumers' way: span links), in child spans
  of at most `LINKS_PER_SPAN` links each.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags

from nlp_assets.kernels.ingest import TRACEPARENT

TRACER_NAME = "nlp_assets"
#: The W3C trace context of the span that planned a run (a sensor tick), in the run's tags.
TRACEPARENT_TAG = "nlp/traceparent"
#: The SDK's default span link limit (OTEL_SPAN_LINK_COUNT_LIMIT): documents are linked in
#: child spans of at most this many links each, so none is dropped.
LINKS_PER_SPAN = 128

_lock = threading.Lock()
_configured = False


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def _exporter() -> Any:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_exporter

        return grpc_exporter.OTLPSpanExporter()  # endpoint, headers, TLS: OTEL_EXPORTER_OTLP_*
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_exporter

        return http_exporter.OTLPSpanExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use 'grpc' or 'http/protobuf'")


def configure(service_name: str) -> bool:
    """Install the SDK in this process once, if tracing is on; True when it is.

    `service_name` is used unless `OTEL_SERVICE_NAME` (or `service.name` in
    `OTEL_RESOURCE_ATTRIBUTES`) names it. Spans are batched and flushed at exit (and by
    `flush()`, which a run worker calls at the end of each step)."""
    global _configured
    if _configured or not enabled():
        return _configured
    with _lock:
        if _configured:
            return True
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # the default service name unless the environment names one (it wins in the merge)
        resource = Resource.create({"service.name": service_name}).merge(
            OTELResourceDetector().detect()
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(_exporter()))
        trace.set_tracer_provider(provider)
        _configured = True
    return True


def flush(timeout_ms: int = 5_000) -> None:
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_ms)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


# --- W3C trace context -----------------------------------------------------------------------
def parse_traceparent(value: Any) -> SpanContext | None:
    """The span context of a valid W3C `traceparent` (version 00), else None."""
    if not isinstance(value, str) or TRACEPARENT.fullmatch(value) is None:
        return None
    _, trace_id, span_id, flags = value.split("-")
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )


def format_traceparent(span_context: SpanContext) -> str | None:
    if not span_context.is_valid:
        return None
    return (
        f"00-{trace.format_trace_id(span_context.trace_id)}-"
        f"{trace.format_span_id(span_context.span_id)}-{int(span_context.trace_flags):02x}"
    )


def current_traceparent() -> str | None:
    """The current span's `traceparent` (None when there is no recording span)."""
    span = trace.get_current_span()
    return format_traceparent(span.get_span_context()) if span.is_recording() else None


def trace_id_of(traceparent: Any) -> str | None:
    context = parse_traceparent(traceparent)
    return trace.format_trace_id(context.trace_id) if context else None


def current_ids() -> tuple[str | None, str | None]:
    """(trace_id, span_id) of the current span, as hex, or (None, None): for log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """A context whose parent span is `traceparent`'s (None: the current context)."""
    parsed = parse_traceparent(traceparent)
    return trace.set_span_in_context(NonRecordingSpan(parsed)) if parsed else None


def run_parent(tags: Mapping[str, str], run_id: str) -> otel_context.Context:
    """The context a run's step spans are children of: the tick's span from the run's tags,
    else a trace whose id is the run id (so every step of a run started from the UI or the CLI
    is one trace; its parent span is not recorded anywhere)."""
    parsed = parse_traceparent(tags.get(TRACEPARENT_TAG))
    if parsed is None:
        hex_id = run_id.replace("-", "").lower()
        trace_id = (
            int(hex_id, 16)
            if re.fullmatch(r"[0-9a-f]{32}", hex_id)
            else int(hashlib.sha256(run_id.encode()).hexdigest()[:32], 16)
        )
        span_id = int(hashlib.sha256(f"run:{run_id}".encode()).hexdigest()[:16], 16) or 1
        parsed = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(parsed))


def run_tags() -> dict[str, str]:
    """Tags that make a run a child of the current span (a sensor tick's): {} when off."""
    traceparent = current_traceparent()
    return {TRACEPARENT_TAG: traceparent} if traceparent else {}


# --- spans -----------------------------------------------------------------------------------
@contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: otel_context.Context | None = None,
) -> Iterator[Span]:
    """A child of the current span (or of `context`), ended on exit, an error recorded.
    Off (`configure` never installed the SDK here): the invalid span, at no cost."""
    if not _configured:
        yield trace.INVALID_SPAN
        return
    with tracer().start_as_current_span(
        name, context=context, kind=kind, attributes=clean_attributes(attributes or {})
    ) as current:
        yield current


def clean_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: None dropped, other non-primitive values as text."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        else:
            out[key] = str(value)
    return out


def link_documents(traceparents: Iterable[Any], *, what: str = "documents") -> int:
    """Link each distinct document trace to the current span, through child spans of at most
    `LINKS_PER_SPAN` links each; returns how many traces were linked (0 when off)."""
    current = trace.get_current_span()
    if not current.is_recording():
        return 0
    own = current.get_span_context().trace_id
    contexts: dict[tuple[int, int], SpanContext] = {}
    for value in traceparents:
        parsed = parse_traceparent(value)
        if parsed is not None and parsed.trace_id != own:  # not the run's own trace
            contexts.setdefault((parsed.trace_id, parsed.span_id), parsed)
    found = list(contexts.values())
    for start in range(0, len(found), LINKS_PER_SPAN):
        chunk = found[start : start + LINKS_PER_SPAN]
        tracer().start_span(
            f"{what} {start + 1}-{start + len(chunk)}",
            links=[Link(context) for context in chunk],
            attributes={"nlp.documents": len(chunk)},
        ).end()
    return len(found)


# --- a step's span, open from its compute to the end of its output's commit ------------------
_held: dict[str, Span] = {}


def step_key(run_id: str, asset: str) -> str:
    return f"{run_id}/{asset}"


def hold(key: str, span_: Span) -> None:
    """Keep `span_` open past the `with` that made it (a step's span, which the IO manager's
    commit ends); `release(key)` hands it back."""
    with _lock:
        previous = _held.pop(key, None)
        _held[key] = span_
    if previous is not None:  # never leak one: a retried step in the same process
        previous.end()


def release(key: str) -> Span | None:
    with _lock:
        return _held.pop(key, None)
