"""An OTLP/gRPC trace receiver for the tests: the collector's own protocol, served by the gRPC
service definitions `opentelemetry-proto` ships (`TraceService/Export`), holding every span it
is sent in memory, decoded to plain Python (`ReceivedSpan`).

A test points a process at `receiver.endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the
`endpoint=` of an `OTLPSpanExporter`), then waits for the spans it expects::

    with OtlpReceiver() as receiver:
        ...  # run something with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
        spans = receiver.wait_for(lambda spans: any(s.name == "step tokens" for s in spans))

The `otlp_receiver` fixture (nlp_assets_tests/conftest.py) is one started for a test. By hand,
as a stand-in collector that prints one JSON line per span (and appends it to FILE)::

    python -m dev.otlp_receiver --port 4317 [--host 0.0.0.0] [--jsonl FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

#: gRPC's default limit is 4 MiB; the collector's is larger. A batch of a few thousand spans
#: with long attributes still fits.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedLink:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str | None  # 16 lowercase hex; None for a root span
    name: str
    kind: str  # "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER" or "UNSPECIFIED"
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[ReceivedLink, ...]
    resource: dict[str, Any]  # the resource's attributes: service.name, ...
    status_code: str  # "UNSET", "OK" or "ERROR"
    events: tuple[str, ...]  # event names, in order ("exception", ...)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def decode_value(value: AnyValue) -> Any:
    """An OTLP `AnyValue` as Python: str, bool, int, float, bytes, list or dict (None if unset)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, which)


def decode_attributes(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {attribute.key: decode_value(attribute.value) for attribute in attributes}


def _enum_name(enum: Any, number: int, prefix: str) -> str:
    try:
        return str(enum.Name(number)).removeprefix(prefix)
    except ValueError:  # a number newer than this proto
        return str(number)


def decode_span(span: Span, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None,
        name=span.name,
        kind=_enum_name(Span.SpanKind, span.kind, "SPAN_KIND_"),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes=decode_attributes(span.attributes),
        links=tuple(
            ReceivedLink(
                trace_id=link.trace_id.hex(),
                span_id=link.span_id.hex(),
                attributes=decode_attributes(link.attributes),
            )
            for link in span.links
        ),
        resource=resource,
        status_code=_enum_name(Status.StatusCode, span.status.code, "STATUS_CODE_"),
        events=tuple(event.name for event in span.events),
    )


def decode_request(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            spans.extend(decode_span(span, resource) for span in scope_spans.spans)
    return spans


def summary(spans: list[ReceivedSpan], limit: int = 40) -> str:
    """What arrived, one line a span (service, name, ids, nlp.* attributes), for a failure."""
    if not spans:
        return "no spans arrived"
    lines = [f"{len(spans)} span(s) arrived:"]
    for span in spans[:limit]:
        ours = {key: value for key, value in span.attributes.items() if key.startswith("nlp.")}
        lines.append(
            f"  [{span.resource.get('service.name', '?')}] {span.name!r} {span.kind} "
            f"trace={span.trace_id} span={span.span_id} parent={span.parent_span_id} "
            f"links={len(span.links)} {ours or ''}".rstrip()
        )
    if len(spans) > limit:
        lines.append(f"  ... and {len(spans) - limit} more")
    return "\n".join(lines)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(  # the generated service's method name
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver._add(decode_request(request))
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """The OTLP/gRPC `TraceService` on `host:port` (port 0: a free one, read back from
    `endpoint` once started). `on_spans`, if given, is called with each request's spans, on the
    gRPC thread that received them."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_spans: Callable[[list[ReceivedSpan]], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._on_spans = on_spans
        self._spans: list[ReceivedSpan] = []
        self._arrived = threading.Condition()
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        """`http://host:port`, what `OTEL_EXPORTER_OTLP_ENDPOINT` takes (http: no TLS)."""
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> OtlpReceiver:
        if self._server is not None:
            return self
        server = grpc.server(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-receiver"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),  # port 0 and a fixed port alike: this server's alone
            ],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise OSError(f"the OTLP receiver cannot listen on {self.host}:{self.port}")
        server.start()
        self.port = bound
        self._server = server
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        """Stops listening; requests under way get `grace` seconds. The spans stay readable."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._arrived:
            self._spans.extend(spans)
            self._arrived.notify_all()
        if self._on_spans is not None and spans:
            self._on_spans(spans)

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order (a copy)."""
        with self._arrived:
            return list(self._spans)

    def clear(self) -> None:
        with self._arrived:
            self._spans.clear()

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """The spans by trace id, each trace's spans by start time."""
        traces: dict[str, list[ReceivedSpan]] = {}
        for span in self.spans():
            traces.setdefault(span.trace_id, []).append(span)
        for spans in traces.values():
            spans.sort(key=lambda span: span.start_ns)
        return traces

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 30.0
    ) -> list[ReceivedSpan]:
        """The spans received, as soon as `predicate(spans)` holds (checked at each arrival);
        AssertionError with a summary of what did arrive after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                spans = list(self._spans)
                if predicate(spans):
                    return spans
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
        raise AssertionError(
            f"the spans waited for did not arrive at {self.endpoint} in {timeout:g} s; "
            + summary(spans)
        )


def span_json(span: ReceivedSpan) -> str:
    """One line of JSON: the span's fields, bytes values as hex."""
    record = asdict(span)
    record["duration_s"] = span.duration_s
    return json.dumps(
        record, default=lambda value: value.hex() if isinstance(value, bytes) else str(value)
    )


def _printer(stream: TextIO, jsonl: Path | None) -> Callable[[list[ReceivedSpan]], None]:
    lock = threading.Lock()

    def write(spans: list[ReceivedSpan]) -> None:
        lines = "".join(span_json(span) + "\n" for span in spans)
        with lock:
            stream.write(lines)
            stream.flush()
            if jsonl is not None:
                with jsonl.open("a", encoding="utf-8") as file:
                    file.write(lines)

    return write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dev.otlp_receiver",
        description="An OTLP/gRPC trace receiver: one JSON line per span on stdout.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=4317, help="port (4317: OTLP/gRPC's own)")
    parser.add_argument("--jsonl", type=Path, help="also append each span's line to this file")
    args = parser.parse_args(argv)
    receiver = OtlpReceiver(args.host, args.port, on_spans=_printer(sys.stdout, args.jsonl))
    stopped = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopped.set())
    with receiver:
        print(
            f"OTLP/gRPC receiver on {args.host}:{receiver.port}: "
            f"OTEL_EXPORTER_OTLP_ENDPOINT={receiver.endpoint}",
            file=sys.stderr,
            flush=True,
        )
        while not stopped.wait(0.5):
            pass
    print(f"{len(receiver.spans())} span(s) received", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
