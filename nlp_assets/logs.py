"""Log lines of every process: one format, secrets redacted, caller text escaped (docs/monitoring.md
"Logs").

`NLP_LOG_FORMAT` picks the format: `text` (default: one human-readable line per record) or
`json` (one JSON object per line: `time`, `level`, `logger`, `message`, `run_id`, `step_key`,
`partition`, `part`, `trace_id`, `span_id`, and `exception` when there is one). `LogFormatter`
renders both, and every record goes through `redact` first, whatever the format:

- a URL's password (`scheme://user:password@host`) and `password=...`-style pairs;
- the values of the secret settings (`SecretStr` fields of `nlp_assets.settings.Settings`, and the
  secret variables read elsewhere, `SECRET_VARIABLES`), and the password inside a secret URL;
- bearer tokens and JWTs (`eyJ...`), and API keys of our format (`nlp_<key id>_<secret>`: the key
  id, which is not a secret, stays).

In text, control characters (C0, DEL, C1, U+2028/2029) of the message become `\\xNN` escapes, so a
record is exactly one line; its traceback follows on lines indented by four spaces, so a line
that starts in column 0 always starts a record. In JSON, `json.dumps` escapes them and the line
parses back to the message.

Who calls what: `configure()` puts the formatter on this process's console handlers (a stderr
handler on the root logger, Dagster's and uvicorn's own stream handlers); the API's `create_app`
and the code location (`nlp_assets.definitions`, so the code server and every run and step
worker) call it. `RunHandler` is the run workers' handler in dagster.yaml (`python_logs`): every
event of a run, with the run's `run_id`, `step_key`, partition and `nlp/part` tag. Importing this
module reads nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from nlp_assets import settings

FORMATS = ("text", "json")
REDACTED = "[REDACTED]"
#: Secret variables not read through `Settings` (the alert webhook, the CLI's key, libraries'
#: and the chart's own): their values are redacted too when set.
SECRET_VARIABLES = (
    "NLP_ALERT_WEBHOOK_URL",
    "NLP_API_KEY",
    "REDIS_PASSWORD",
    "DAGSTER_PG_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PROBE_KEY",
)
#: The run tag naming the part a run writes (`resources.lake.PART_TAG`).
PART_TAG = "nlp/part"
PARTITION_TAG = "dagster/partition"
#: Secret values shorter than this are not searched for (too many false hits; none is that short).
MIN_SECRET_CHARS = 6

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*):[^\s@/?#]*@")
_KEY_VALUE = re.compile(
    r"(?i)(?P<head>\b(?:password|passwd|pwd|secret|token|api[_-]?key)\s*[=:]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s&,;'\"]+)"
)
_BEARER = re.compile(r"(?i)(?P<head>\bbearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,2}")
_API_KEY = re.compile(r"(?P<head>\bnlp_[0-9a-f]{12}_)[A-Za-z0-9_-]+")
#: C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: What `json.dumps(ensure_ascii=False)` leaves raw and a line splitter may still break on.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")


# -- redaction and escaping ---------------------------------------------------------------------


def secret_values() -> list[str]:
    """The secret values this process knows, longest first: the `SecretStr` settings, the
    `SECRET_VARIABLES`, and the password (raw and percent-decoded) of each that is a URL."""
    given = settings.get()
    values: list[str] = []
    for name in type(given).model_fields:
        value = getattr(given, name)
        if hasattr(value, "get_secret_value"):
            values.append(value.get_secret_value())
    values += [os.environ.get(name, "") for name in SECRET_VARIABLES]
    for value in list(values):
        if "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                values += [password, unquote(password)]
    return sorted({v for v in values if len(v) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` without secrets (see the module docstring); `secrets` defaults to
    `secret_values()`."""
    for secret in secret_values() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    text = _KEY_VALUE.sub(lambda m: f"{m['head']}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m['head']}{REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    return _API_KEY.sub(lambda m: f"{m['head']}{REDACTED}", text)


def escape(text: str) -> str:
    """`text` on one line: each control character as `\\xNN` (`\\uNNNN` above 0xff)."""

    def one(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"

    return _CONTROL.sub(one, text)


# -- the formatter ------------------------------------------------------------------------------


def log_format() -> str:
    """`NLP_LOG_FORMAT`: `text` (default) or `json`."""
    return settings.get().log_format


def _trace_ids() -> tuple[str | None, str | None]:
    """(trace id, span id) of the current OpenTelemetry span, as 32 and 16 lowercase hex
    digits; (None, None) without a valid span (or without OpenTelemetry)."""
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - a dependency of the package
        return None, None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _dagster_error(meta: Mapping[str, Any]) -> str | None:
    """The error text of a Dagster event (a step failure's), as Dagster prints it."""
    data = getattr(meta.get("dagster_event"), "event_specific_data", None)
    error = getattr(data, "error", None)
    if error is None:
        return None
    text = getattr(data, "error_display_string", None) or error.to_string()
    return str(text)


class LogFormatter(logging.Formatter):
    """One record, redacted, as one text line (plus an indented traceback) or one JSON line.

    `fmt` is `text` or `json`; None reads `NLP_LOG_FORMAT` (so a logging config naming this
    class, e.g. `"()": nlp_assets.logs.LogFormatter`, follows the setting)."""

    def __init__(self, fmt: str | None = None, **_ignored: Any):
        super().__init__()
        chosen = fmt or log_format()
        if chosen not in FORMATS:
            raise ValueError(f"log format {chosen!r}: choose one of {', '.join(FORMATS)}")
        self.kind = chosen

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record's fields, redacted (the JSON object; the text line shows the same)."""
        secrets = secret_values()
        meta = getattr(record, "dagster_meta", None)
        meta = meta if isinstance(meta, Mapping) else {}
        tags = meta.get("job_tags") or {}
        if meta.get("orig_message") is not None:  # a Dagster record: its own message and error
            message = str(meta["orig_message"])
            error = _dagster_error(meta)
        else:
            message = record.getMessage()
            error = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        exception = "\n".join(filter(None, [error, record.exc_text, record.stack_info])) or None
        trace_id, span_id = _trace_ids()
        fields: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "run_id": meta.get("run_id"),
            "step_key": meta.get("step_key"),
            "partition": tags.get(PARTITION_TAG),
            "part": tags.get(PART_TAG),
            "trace_id": trace_id,
            "span_id": span_id,
        }
        event = getattr(meta.get("dagster_event"), "event_type_value", None)
        if event:
            fields["dagster_event"] = event
        if meta.get("job_name"):
            fields["job"] = meta["job_name"]
        if exception:
            fields["exception"] = exception
        return {
            key: redact(value, secrets) if isinstance(value, str) else value
            for key, value in fields.items()
        }

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        if self.kind == "json":
            line = json.dumps(fields, ensure_ascii=False, default=str)
            return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
        context = " ".join(
            f"{key}={escape(str(fields[key]))}"
            for key in ("job", "run_id", "step_key", "partition", "part", "trace_id", "span_id")
            if fields.get(key)
        )
        line = (
            f"{fields['time']} {fields['level']} {escape(fields['logger'])} - "
            f"{escape(fields['message'])}" + (f" [{context}]" if context else "")
        )
        if fields.get("exception"):
            line += "".join(
                f"\n    {escape(text)}" for text in fields["exception"].split("\n") if text
            )
        return line


# -- wiring -------------------------------------------------------------------------------------


class StderrHandler(logging.StreamHandler):
    """A stream handler on whatever `sys.stderr` is when it writes (test captures swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(fmt: str | None = None) -> LogFormatter:
    """Make this process's console output our format: a stderr handler on the root logger (once),
    `nlp_assets` loggers at INFO (unless set), and the formatter on every plain console handler
    already installed (Dagster's `dagster` logger in a code server or run worker, uvicorn's).
    Levels of other loggers are left as they are. Safe to call again."""
    formatter = LogFormatter(fmt)
    root = logging.getLogger()
    if not any(isinstance(handler, StderrHandler) for handler in root.handlers):
        root.addHandler(StderrHandler())
    ours = logging.getLogger("nlp_assets")
    if ours.level == logging.NOTSET:
        ours.setLevel(logging.INFO)
    loggers = [root, *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            # exactly these classes: a file, pytest's capture or another tool's handler is kept
            if type(handler) in (logging.StreamHandler, StderrHandler):
                handler.setFormatter(formatter)
    return formatter


class RedactInPlace(logging.Filter):
    """Rewrites a record's message, redacted and escaped, into the record itself, so every
    handler and Dagster logger that sees the record after this filter prints it that way."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = escape(redact(record.getMessage()))
        record.args = ()
        return True


class RunHandler(StderrHandler):
    """The run workers' handler (`python_logs.dagster_handler_config` in dagster.yaml, so Dagster
    hands it every event of a run, with the run's `dagster_meta`).

    Dagster calls the instance's handlers before its own console logger, with the same record:
    this handler first rewrites the record's message redacted and escaped (`RedactInPlace`), so
    Dagster's console line is one line without secrets; then, with `NLP_LOG_FORMAT=json`, it
    writes the record as our JSON line (with text, Dagster's console line is the text line)."""

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__()
        self.setFormatter(LogFormatter(fmt))
        self.addFilter(RedactInPlace())

    def emit(self, record: logging.LogRecord) -> None:
        formatter = self.formatter
        if isinstance(formatter, LogFormatter) and formatter.kind == "json":
            super().emit(record)
