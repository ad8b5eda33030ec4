"""The tests' OTLP/gRPC trace receiver (`dev/otlp_receiver.py`) against the real exporter: the
OpenTelemetry SDK's `OTLPSpanExporter` sends over gRPC, from this process and from a child
process configured by the standard `OTEL_*` variables alone, and the receiver returns what the
SDK ended, ids, parents, links, attributes and resource included."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dev.otlp_receiver import OtlpReceiver, ReceivedLink, ReceivedSpan

pytestmark = pytest.mark.trace

CHILD_ATTRIBUTES = {
    "nlp.asset": "tokens",
    "nlp.rows_in": 1200,
    "nlp.share": 0.25,
    "nlp.quarantined": False,
    "nlp.parts": ["a", "b"],
    "nlp.sizes": [1, 2, 3],
    "nlp.weights": [0.5, 1.5],
    "nlp.flags": [True, False],
}


def as_sdk_sent(span: ReadableSpan) -> tuple:
    """A finished SDK span in the receiver's terms (ids as lowercase hex)."""
    context = span.get_span_context()
    assert context is not None
    return (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        format(span.parent.span_id, "016x") if span.parent else None,
        span.name,
        span.kind.name,
        span.start_time,
        span.end_time,
        {key: list(v) if isinstance(v, tuple) else v for key, v in span.attributes.items()},
        tuple(
            ReceivedLink(
                format(link.context.trace_id, "032x"),
                format(link.context.span_id, "016x"),
                dict(link.attributes or {}),
            )
            for link in span.links
        ),
        span.status.status_code.name,
        tuple(event.name for event in span.events),
    )


def as_received(span: ReceivedSpan) -> tuple:
    return (
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        span.kind,
        span.start_ns,
        span.end_ns,
        span.attributes,
        span.links,
        span.status_code,
        span.events,
    )


def test_receiver_returns_exactly_the_spans_the_sdk_exported_over_grpc(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "receiver-test")
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    ended = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(ended))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_receiver.endpoint, insecure=True))
    )
    tracer = provider.get_tracer("test_otlp_receiver")
    with (
        tracer.start_as_current_span("parent", kind=trace.SpanKind.SERVER) as parent,
        tracer.start_as_current_span("child", attributes=CHILD_ATTRIBUTES) as child,
    ):
        child.add_event("halfway")
    with tracer.start_as_current_span(
        "linked",
        kind=trace.SpanKind.CONSUMER,
        links=[
            trace.Link(parent.get_span_context(), {"nlp.doc_id": "d-1"}),
            trace.Link(child.get_span_context(), {"nlp.doc_id": "d-2", "nlp.offset": 7}),
        ],
    ) as linked:
        linked.set_status(trace.StatusCode.ERROR, "failed on purpose")
    assert provider.force_flush(10_000)
    provider.shutdown()

    received = otlp_receiver.wait_for(lambda spans: len(spans) >= 3, timeout=10)
    assert len(received) == 3
    sent = ended.get_finished_spans()
    assert sorted(map(as_received, received)) == sorted(map(as_sdk_sent, sent))

    by_name = {span.name: span for span in received}
    parent_span, child_span, linked_span = by_name["parent"], by_name["child"], by_name["linked"]
    assert parent_span.parent_span_id is None and parent_span.kind == "SERVER"
    assert child_span.parent_span_id == parent_span.span_id
    assert child_span.trace_id == parent_span.trace_id
    assert child_span.attributes == CHILD_ATTRIBUTES
    assert child_span.events == ("halfway",)
    assert linked_span.trace_id != parent_span.trace_id  # a root of its own, linked
    assert [(link.trace_id, link.span_id) for link in linked_span.links] == [
        (parent_span.trace_id, parent_span.span_id),
        (child_span.trace_id, child_span.span_id),
    ]
    assert linked_span.links[1].attributes == {"nlp.doc_id": "d-2", "nlp.offset": 7}
    assert linked_span.status_code == "ERROR"
    assert all(len(span.trace_id) == 32 and len(span.span_id) == 16 for span in received)
    assert 0 <= child_span.duration_s <= parent_span.duration_s
    for span in received:
        assert span.resource["service.name"] == "receiver-test"
        assert span.resource["telemetry.sdk.language"] == "python"
    assert otlp_receiver.traces() == {
        parent_span.trace_id: [parent_span, child_span],
        linked_span.trace_id: [linked_span],
    }
    otlp_receiver.clear()
    assert otlp_receiver.spans() == []


CHILD_PROCESS = textwrap.dedent(
    """
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # no endpoint, service or resource in the code: the OTEL_* variables give them; the
    # provider's exit hook flushes the batch
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("child")
    with tracer.start_as_current_span("step tokens") as step:
        step.set_attribute("nlp.asset", "tokens")
        with tracer.start_as_current_span("write"):
            pass
    print(format(step.get_span_context().trace_id, "032x"))
    """
)


@pytest.mark.parametrize("scheme", ["http", "insecure"])
def test_child_process_configured_by_otel_variables_alone_exports_to_receiver(
    otlp_receiver: OtlpReceiver, scheme: str
):
    """`http`: `OTEL_EXPORTER_OTLP_ENDPOINT=http://host:port` (plain text by its scheme);
    `insecure`: `host:port` with `OTEL_EXPORTER_OTLP_INSECURE=true`."""
    address = otlp_receiver.endpoint.removeprefix("http://")
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env |= {
        "OTEL_SERVICE_NAME": "nlp-child",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,service.namespace=nlp",
    }
    if scheme == "http":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{address}"
    else:
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": address, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD_PROCESS], env=env, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    trace_id = child.stdout.strip()

    # the process has exited: its spans were sent before it did
    spans = otlp_receiver.wait_for(lambda spans: len(spans) >= 2, timeout=5)
    assert sorted(span.name for span in spans) == ["step tokens", "write"]
    step, write = sorted(spans, key=lambda span: span.name)
    assert step.trace_id == write.trace_id == trace_id
    assert write.parent_span_id == step.span_id
    assert step.attributes == {"nlp.asset": "tokens"}
    for span in spans:
        assert span.resource["service.name"] == "nlp-child"
        assert span.resource["deployment.environment"] == "test"
        assert span.resource["service.namespace"] == "nlp"


def test_wait_for_names_what_did_arrive_when_it_times_out(otlp_receiver: OtlpReceiver):
    provider = TracerProvider(resource=Resource({"service.name": "late"}), shutdown_on_exit=False)
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_receiver.endpoint, insecure=True))
    )
    with provider.get_tracer("t").start_as_current_span("only this", attributes={"nlp.part": "p1"}):
        pass
    provider.shutdown()
    otlp_receiver.wait_for(lambda spans: len(spans) == 1, timeout=10)
    with pytest.raises(AssertionError) as failure:
        otlp_receiver.wait_for(lambda spans: len(spans) == 2, timeout=0.2)
    message = str(failure.value)
    assert "1 span(s) arrived" in message
    assert "[late] 'only this'" in message and "'nlp.part': 'p1'" in message
