"""One document's path as one trace, against a real OTLP/gRPC receiver (dev/otlp_receiver.py).

- A document sent to the API goes to Kafka; the real `dagster-daemon` (the chaos harness's
  stack) ticks the topic's sensor and runs the micro-batch. The API's request span, the tick,
  the run's steps down to `predictions` and the inner work are exported by four processes
  (API, code server, run worker, step processes) and must join up.
- A file dropped in the landing folder, run by `dagster asset materialize` with `cleaned_text`
  on Spark: the executors' batches are children of the step's span.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import polars as pl
import pytest
import yaml

from dev.otlp_receiver import OtlpReceiver, ReceivedSpan
from nlp_assets.api.keys import FileKeyStore
from nlp_assets.lake import Lake
from nlp_assets_tests.api_server import api_server
from nlp_assets_tests.chaos import chaos_stack, instance_config

pytestmark = pytest.mark.trace

REPO = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
PART_STAGES = ("raw_text", "cleaned_text", "tokens", "features", "predictions")


def otel_env(receiver: OtlpReceiver) -> dict[str, str]:
    """What turns traces on in every process: the standard variables only."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: spans arrive soon after they end
        "NLP_LOG_FORMAT": "json",
    }


def _named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def _children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [
        s for s in spans if s.trace_id == parent.trace_id and s.parent_span_id == parent.span_id
    ]


def _descendants(spans: list[ReceivedSpan], root: ReceivedSpan) -> list[ReceivedSpan]:
    found, frontier = [], [root]
    while frontier:
        nxt = [c for p in frontier for c in _children(spans, p)]
        found += nxt
        frontier = nxt
    return found


@pytest.mark.kafka
@pytest.mark.api
def test_a_document_sent_to_the_api_is_one_trace_from_its_request_to_its_prediction_row(
    tmp_path: Path, trained_sentiment_head: Path, otlp_receiver: OtlpReceiver
):
    otel = otel_env(otlp_receiver)
    with chaos_stack(
        tmp_path / "stack", trained_sentiment_head, max_messages_per_run=50, extra_env=otel
    ) as stack:
        keys = FileKeyStore(tmp_path / "keys.json")
        _, submitter = keys.create("producer", "submitter", channels=["api"])
        _, reader = keys.create("dashboard", "reader")
        env = {
            "NLP_DATA_DIR": str(tmp_path / "api-data"),
            "NLP_LANDING_DIR": str(tmp_path / "api-landing"),
            "NLP_LAKE_DIR": str(stack.lake_dir),
            "NLP_API_KEYS_FILE": str(tmp_path / "keys.json"),
            "KAFKA_BOOTSTRAP_SERVERS": stack.broker.bootstrap,
            "NLP_API_KAFKA_TOPIC": stack.topic,
            "KAFKA_EXTRA_CONFIG": '{"batch.num.messages": "1"}',
            "DATABASE_URL": "",
            "REDIS_URL": "",
            **otel,
        }
        with api_server(env, tmp_path / "api.log") as url:
            sent = httpx.post(
                f"{url}/v1/documents",
                json=[{"id": "trace-1", "text": "The night train to Vienna was wonderful."}],
                headers={"Authorization": f"Bearer {submitter}"},
                timeout=60,
            )
            assert sent.status_code == 202, sent.text
            doc_id = sent.json()["results"][0]["doc_id"]
            today = datetime.now(UTC).date().isoformat()
            lake = Lake(stack.lake_dir)
            deadline = time.monotonic() + 600
            while not lake.find("predictions", [today], "doc_id", doc_id).height:
                assert time.monotonic() < deadline, stack.daemon_log_tail()
                time.sleep(2)
            spans = otlp_receiver.wait_for(
                lambda got: bool(_named(got, "step predictions")), timeout=60
            )
            status = httpx.get(
                f"{url}/v1/documents/{doc_id}",
                headers={"Authorization": f"Bearer {reader}"},
                timeout=30,
            ).json()
        row = lake.find("predictions", [today], "doc_id", doc_id).row(0, named=True)
        daemon_log = (stack.root / "daemon.log").read_text(errors="replace")
    spans = otlp_receiver.spans()

    # 1. the API's request span: the document's trace
    (request,) = [
        s
        for s in spans
        if s.resource.get("service.name") == "nlp-api"
        and s.kind == "SERVER"
        and s.attributes.get("http.route") == "/v1/documents"
    ]
    assert row["trace_id"] == request.trace_id  # 2. the prediction row keeps it
    assert status["trace_id"] == request.trace_id and status["runs"], status
    # 3. the sensor tick that planned the range, in the code server
    (step,) = _named(spans, "step predictions")
    ticks = [s for s in spans if s.name.startswith("sensor ") and s.trace_id == step.trace_id]
    assert len(ticks) == 1, [s.name for s in spans]
    tick = ticks[0]
    assert tick.resource["service.name"] == "nlp-sensors"
    # 4./5. the run's steps: children of the tick, one per stage, with their attributes
    steps = {s.attributes["nlp.asset"]: s for s in _children(spans, tick)}
    assert set(PART_STAGES) <= set(steps), sorted(steps)
    for name in PART_STAGES:
        attributes = steps[name].attributes
        assert attributes["nlp.partition"] == today
        assert attributes["nlp.part"].startswith(f"kafka-{stack.topic}-p0-")
        assert attributes["nlp.run_id"] in status["runs"]
        assert attributes["nlp.rows_out"] == 1, (name, attributes)
        assert steps[name].resource["service.name"] == "nlp-run"
    assert steps["raw_text"].attributes["nlp.rows_in"] == 1
    assert steps["raw_text"].attributes["nlp.quarantined"] == 0
    assert steps["predictions"].attributes["nlp.engine"] == "local"
    assert "minilm" in steps["predictions"].attributes["nlp.model.sentiment"]
    assert {"nlp.cache_hits", "nlp.cache_misses"} <= set(steps["features"].attributes)
    # the document's trace reaches the run: a link from the raw step to the request span
    links = [link for s in _descendants(spans, steps["raw_text"]) for link in s.links]
    assert [(link.trace_id, link.span_id) for link in links] == [
        (request.trace_id, request.span_id)
    ]
    # 6. the inner work, each inside its step
    inner = {name: {s.name for s in _descendants(spans, steps[name])} for name in steps}
    assert {"kafka read", "lake commit"} <= inner["raw_text"], inner["raw_text"]
    assert {"model batch", "cache get", "cache set", "lake commit"} <= inner["features"]
    assert {"model batch", "lake commit"} <= inner["predictions"]
    # the run workers' JSON log lines carry the run's trace
    lines = [json.loads(line) for line in daemon_log.splitlines() if line.startswith("{")]
    traced = [line for line in lines if line.get("trace_id") == step.trace_id]
    assert any(line.get("run_id") == step.attributes["nlp.run_id"] for line in traced), lines[-5:]


@pytest.mark.spark
def test_a_dropped_file_and_a_spark_step_are_one_trace_with_the_executors_batches_inside(
    tmp_path: Path, otlp_receiver: OtlpReceiver
):
    day = date(2026, 12, 1).isoformat()
    landing = tmp_path / "landing" / day
    landing.mkdir(parents=True)
    came_with = {
        "a": "00-" + "a1" * 16 + "-" + "b1" * 8 + "-01",
        "b": "00-" + "a2" * 16 + "-" + "b2" * 8 + "-01",
        "c": None,  # no trace context: it joins the run's trace
    }
    records = [
        {
            "id": key,
            "text": f"Document {key}: the service was friendly and the food was excellent.",
            **({"traceparent": value} if value else {}),
        }
        for key, value in came_with.items()
    ]
    (landing / "drop.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config()))
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {"ops": {"cleaned_text": {"config": {"engine": "spark", "spark_min_docs": 1}}}}
        )
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NLP_", "DAGSTER_", "OTEL_"))
    } | {
        "DAGSTER_HOME": str(home),
        "NLP_DATA_DIR": str(tmp_path / "data"),
        "NLP_LAKE_DIR": str(tmp_path / "lake"),
        "NLP_LANDING_DIR": str(tmp_path / "landing"),
        "NLP_REPORTS_DIR": str(tmp_path / "reports"),
        "NLP_METRICS_TEXTFILE_DIR": str(tmp_path / "metrics"),
        "NLP_SPARK_MASTER": "local[2]",
        **otel_env(otlp_receiver),
    }
    done = subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "nlp_assets.definitions",
            "--select",
            "raw_text,cleaned_text",
            "--partition",
            day,
            "-c",
            str(config),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    spans = otlp_receiver.wait_for(
        lambda got: len(_named(got, "step cleaned_text")) == 1 and bool(_named(got, "spark batch")),
        timeout=60,
    )
    (raw_step,) = _named(spans, "step raw_text")
    (clean_step,) = _named(spans, "step cleaned_text")
    run_id = raw_step.attributes["nlp.run_id"]
    # a run started from the CLI: one trace, named by the run id, for both step processes
    assert raw_step.trace_id == clean_step.trace_id == run_id.replace("-", "")
    assert raw_step.parent_span_id == clean_step.parent_span_id
    assert clean_step.attributes["nlp.engine"] == "spark"
    batches = _named(spans, "spark batch")
    assert batches and all(b.parent_span_id == clean_step.span_id for b in batches)
    assert all(b.trace_id == clean_step.trace_id for b in batches)
    by_kernel: dict[str, int] = {}
    for b in batches:  # each mapInArrow pass (clean, then write) saw every document once
        by_kernel[b.attributes["nlp.kernel"]] = by_kernel.get(b.attributes["nlp.kernel"], 0)
        by_kernel[b.attributes["nlp.kernel"]] += b.attributes["nlp.rows"]
    assert by_kernel and set(by_kernel.values()) == {3}, by_kernel
    assert {b.resource["service.name"] for b in batches} == {"nlp-spark-worker"}
    # the two documents that came with a trace are linked from the raw step
    links = {
        (link.trace_id, link.span_id) for s in _descendants(spans, raw_step) for link in s.links
    }
    assert links == {(v[3:35], v[36:52]) for v in came_with.values() if v}
    # each row keeps its own context; the third has the run's
    lake = Lake(tmp_path / "lake")
    for table in ("raw_text", "cleaned_text"):
        kept = dict(lake.read_day_columns(table, day, ["doc_id", "traceparent"]).iter_rows())
        raw = lake.read_day_columns("raw_text", day, ["doc_id", "source_id"])
        by_key = dict(zip(raw["source_id"], raw["doc_id"], strict=True))
        assert kept[by_key["a"]] == came_with["a"] and kept[by_key["b"]] == came_with["b"]
        assert kept[by_key["c"]][3:35] == raw_step.trace_id, table
    # nlp trace: the path from the lake and the instance, no trace backend asked
    traced = subprocess.run(
        [str(BIN / "nlp"), "trace", by_key["a"], "--day", day, "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert traced.returncode == 0, traced.stderr
    path = json.loads(traced.stdout)
    assert path["trace_id"] == came_with["a"][3:35]
    assert path["source"]["file"].endswith("drop.jsonl")
    (run,) = path["runs"]
    assert run["run_id"] == run_id and run["status"] == "SUCCESS"
    steps = {s["step"]: s for s in run["steps"]}
    assert {"raw_text", "cleaned_text"} <= set(steps)  # and the checks the CLI selected
    assert all(steps[name]["seconds"] > 0 for name in ("raw_text", "cleaned_text"))
    assert {c["table"] for c in path["commits"]} >= {"raw_text", "cleaned_text"}
    assert pl.DataFrame(path["commits"])["run_id"].unique().to_list() == [run_id]
