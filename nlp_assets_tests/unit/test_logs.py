"""Log lines (nlp_assets/logs.py): fields, secrets redacted and control characters escaped in both
formats, for plain records, a real Dagster run's events and a failing step's error."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from nlp_assets import logs

FORMATS = ["text", "json"]
DSN = "postgresql://nlp:Pg-Pl4nted-Pw@127.0.0.1:5432/warehouse"
REDIS = "redis://:Rd-Pl4nted-Pw@127.0.0.1:{port}/0"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLWEtZm9yZ2Vk"
API_KEY = "nlp_0123456789ab_Ak-Pl4nted-secret-part-of-a-key_xyz"
REPO = Path(__file__).parents[2]
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def capture(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    """A logger whose records go, formatted, to a string buffer only."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.LogFormatter(fmt))
    logger = logging.Logger(f"nlp_assets.test.{fmt}", logging.DEBUG)
    logger.addHandler(handler)
    return logger, buffer


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_kind_of_secret_is_redacted_in_message_args_and_exception(fmt):
    logger, out = capture(fmt)
    redis_url = REDIS.format(port=6390)
    logger.warning("connecting to %s and %s", DSN, redis_url)
    logger.info("Authorization: Bearer %s; key %s; jwt %s", "opaque-Bearer-T0ken", API_KEY, JWT)
    logger.info("libpq: host=db user=nlp password=Kv-Pl4nted-Pw sslmode=require")
    try:
        raise ConnectionError(f"cannot reach {DSN} (token={JWT})")
    except ConnectionError:
        logger.exception("retrying")
    text = out.getvalue()
    for secret in ("Pg-Pl4nted-Pw", "Rd-Pl4nted-Pw", "opaque-Bearer-T0ken", "Kv-Pl4nted-Pw"):
        assert secret not in text
    assert JWT[:20] not in text and "Ak-Pl4nted" not in text
    # what is not secret stays: user, host, the key's id
    assert "postgresql://nlp:[REDACTED]@127.0.0.1:5432/warehouse" in text
    assert "nlp_0123456789ab_[REDACTED]" in text
    assert "ConnectionError" in text


def test_values_of_secret_settings_are_redacted_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:Db%2FPl4nted@db:5432/x")
    monkeypatch.setenv("REDIS_URL", "rediss://default:RedisPl4nted@cache:6380/0")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "SaslPl4nted")
    monkeypatch.setenv("NLP_ALERT_WEBHOOK_URL", "https://hooks.example/T0/B0/WebhookPl4nted")
    for fmt in FORMATS:
        logger, out = capture(fmt)
        # bare, decoded, inside other words: no URL shape to recognise
        logger.error("auth failed for password Db/Pl4nted, RedisPl4nted; sasl=SaslPl4nted")
        logger.error("posting to https://hooks.example/T0/B0/WebhookPl4nted failed")
        text = out.getvalue()
        for secret in ("Db/Pl4nted", "RedisPl4nted", "SaslPl4nted", "WebhookPl4nted"):
            assert secret not in text, (fmt, text)


@pytest.mark.parametrize("fmt", FORMATS)
def test_control_characters_in_a_document_field_cannot_forge_a_line(fmt):
    logger, out = capture(fmt)
    field = "doc\n2026-01-01T00:00:00.000Z ERROR forged - admin logged in\r\x1b[2J\x00\x85\u2028"
    logger.warning("refused record %r: %s", "id", field)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "\x1b" not in lines[0] and "\r" not in lines[0]
    if fmt == "json":
        assert json.loads(lines[0])["message"] == f"refused record 'id': {field}"
    else:
        assert "doc\\x0a2026-01-01T00:00:00.000Z ERROR forged" in lines[0]
        assert "\\x1b[2J\\x00\\x85\\u2028" in lines[0]


def test_text_traceback_lines_are_indented_so_none_starts_a_record():
    logger, out = capture("text")
    try:
        raise ValueError("bad field\n2026-01-01T00:00:00.000Z INFO forged - line\x1b[31m")
    except ValueError:
        logger.exception("step failed")
    first, *rest = out.getvalue().splitlines()
    assert first.endswith(" ERROR nlp_assets.test.text - step failed")
    assert rest and all(line.startswith("    ") for line in rest)
    assert "\x1b" not in out.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
def test_fields_and_time_in_iso_utc(fmt):
    logger, out = capture(fmt)
    logger.info("hello %s", "world")
    line = out.getvalue().rstrip("\n")
    if fmt == "json":
        fields = json.loads(line)
        assert set(fields) == {
            *("time", "level", "logger", "message", "run_id", "step_key"),
            *("partition", "part", "trace_id", "span_id"),
        }
        assert fields["message"] == "hello world" and fields["level"] == "INFO"
        assert fields["logger"] == "nlp_assets.test.json" and fields["trace_id"] is None
        assert re.fullmatch(TIME, fields["time"])
    else:
        assert re.fullmatch(TIME + r" INFO nlp_assets\.test\.text - hello world", line)


@pytest.mark.parametrize("fmt", FORMATS)
def test_trace_and_span_ids_of_the_current_span(fmt):
    tracer = TracerProvider().get_tracer("test")
    logger, out = capture(fmt)
    with tracer.start_as_current_span("step") as span:
        logger.info("inside")
        context = span.get_span_context()
    logger.info("outside")
    inside, outside = out.getvalue().splitlines()
    trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    if fmt == "json":
        assert (json.loads(inside)["trace_id"], json.loads(inside)["span_id"]) == (
            trace_id,
            span_id,
        )
        assert json.loads(outside)["trace_id"] is None
    else:
        assert f"trace_id={trace_id} span_id={span_id}" in inside
        assert "trace_id" not in outside


# any message and arguments: one line per record; JSON parses back to the (redacted) message
_ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(message=_ANY_TEXT, args=st.lists(_ANY_TEXT | st.integers(), max_size=3))
def test_any_message_and_args_make_exactly_one_line_per_record(message, args):
    template = message.replace("%", "%%") + " %s" * len(args)
    expected = logs.redact(template % tuple(args) if args else template, [])
    for fmt in FORMATS:
        logger, out = capture(fmt)
        logger.info(template, *args)
        logger.info(template, *args)
        lines = out.getvalue().split("\n")
        assert lines[-1] == "" and len(lines) == 3, (fmt, lines)
        assert lines[0].splitlines() == [lines[0]]  # no \r, \x85, \u2028 ... inside either
        if fmt == "json":
            assert json.loads(lines[0])["message"] == expected


# -- a real Dagster run: its events carry the run's fields, its failures are redacted ---------

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@dg.asset(partitions_def=DAYS)
def fine(context) -> None:
    context.log.info("writing %s", context.partition_key)


@dg.asset(partitions_def=DAYS, deps=[fine], retry_policy=dg.RetryPolicy(max_retries=1))
def flaky(context) -> None:
    url = REDIS.format(port=closed_port())
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.ConnectionError as error:
        context.log.warning(f"cache {url} unavailable: {error}")
    raise RuntimeError(f"warehouse {DSN} refused the part; caller sent {JWT}")


#: The run, in a process of its own as a run worker is: a test that ran before in the same
#: pytest worker cannot have left handlers or levels on the loggers Dagster uses.
RUN_JOB = """
import sys
import dagster as dg, yaml
from nlp_assets_tests.unit.test_logs import DAYS, REPO, fine, flaky
python_logs = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())["python_logs"]
job = dg.define_asset_job("logged", selection=[fine, flaky], partitions_def=DAYS)
defs = dg.Definitions(assets=[fine, flaky], jobs=[job])
with dg.instance_for_test(overrides={"python_logs": python_logs}, temp_dir=sys.argv[1]) as i:
    result = defs.resolve_job_def("logged").execute_in_process(
        partition_key="2026-01-02", tags={"nlp/part": "kafka-t-p0-0-10"}, instance=i,
        raise_on_error=False,
    )
print(result.run_id, result.success)
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_dagster_run_logs_its_fields_and_redacts_a_failing_retried_step(fmt, tmp_path):
    """With deploy/dagster.yaml's python_logs (the run workers' config) on a real instance."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_JOB, str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "NLP_LOG_FORMAT": fmt},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_id, success = done.stdout.split()[-2:]
    assert success == "False"
    err = done.stderr
    for secret in ("Pg-Pl4nted-Pw", "Rd-Pl4nted-Pw", JWT[:20]):
        assert secret not in err
    if fmt == "json":
        records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        ours = [r for r in records if r["run_id"] == run_id]
        assert {r["partition"] for r in ours} == {"2026-01-02"}
        assert {r["part"] for r in ours} == {"kafka-t-p0-0-10"}
        assert {"fine", "flaky"} <= {r["step_key"] for r in ours}
        assert any(r["message"] == "writing 2026-01-02" for r in ours)
        # each failed attempt carries the error, redacted. Dagster logs the first as
        # STEP_UP_FOR_RETRY and usually the last as STEP_FAILURE, but not always: in about one
        # run in eight (measured on this commit and on the one before) it ends the run with
        # "Exceeded max_retries" and no STEP_FAILURE event
        failures = [
            r for r in ours if r.get("dagster_event") in {"STEP_UP_FOR_RETRY", "STEP_FAILURE"}
        ]
        assert failures and all("refused the part" in r["exception"] for r in failures)
        assert all("postgresql://nlp:[REDACTED]@" in r["exception"] for r in failures)
        assert any(r.get("dagster_event") == "STEP_UP_FOR_RETRY" for r in ours)
        assert any("unavailable" in r["message"] for r in ours)
    # Dagster's own console line of each event: redacted, one line (no traceback lines)
    console = [line for line in err.splitlines() if not line.startswith("{")]
    assert any(
        "postgresql://nlp:[REDACTED]@" in line
        and ("STEP_FAILURE" in line or "STEP_UP_FOR_RETRY" in line)
        for line in console
    )
    assert not any(line.startswith(("Traceback", "  File ", "RuntimeError")) for line in console)
