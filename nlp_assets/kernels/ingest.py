"""Stage 1, raw text: read one day of the landing folder into documents with stable ids.

Supported files: JSON Lines (`.jsonl`, `.ndjson`), CSV, Parquet (one record per line or row, a
`text` field required, `id`, `source`, `timestamp` and `metadata` optional, other fields kept in
`metadata`) and plain text (`.txt`, the whole file is one document). A file that cannot be
parsed, and a record that breaks the contract, is quarantined with the reason; the rest loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from nlp_assets.kernels.quarantine import QUARANTINE_SCHEMA, quarantine_frame

STAGE = "raw_text"

RAW_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String(),
    "source": pl.String(),
    "source_id": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "ingest_date": pl.Date(),
    "file": pl.String(),
    "text": pl.String(),
    "metadata": pl.String(),
}

JSONL_SUFFIXES = {".jsonl", ".ndjson"}
TABLE_SUFFIXES = {".csv", ".parquet"}
TEXT_SUFFIXES = {".txt"}
SUPPORTED_SUFFIXES = JSONL_SUFFIXES | TABLE_SUFFIXES | TEXT_SUFFIXES
TEXT_FILES_SOURCE = "text_files"
KNOWN_FIELDS = {"id", "text", "source", "timestamp", "metadata"}


class RecordError(ValueError):
    """A record that breaks the landing contract; its message is the quarantine reason."""

    def __init__(self, reason: str, payload: str | None = None):
        super().__init__(reason)
        self.payload = payload


@dataclass(frozen=True)
class IngestResult:
    docs: pl.DataFrame
    quarantine: pl.DataFrame
    files_read: int


def doc_id_for(source: str, source_id: str | None, text: str) -> str:
    """Stable id: hash of source and source id, or of the text when the record has no id."""
    key = f"{source}\x1f{source_id}" if source_id else f"text\x1f{text}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def parse_event_time(value: Any) -> datetime | None:
    """ISO 8601 (naive means UTC), epoch seconds or milliseconds (also as digits), a datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        raise RecordError(f"invalid timestamp {value!r}")
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (ValueError, OverflowError, OSError):  # NaN, infinity, years past 9999
            raise RecordError(f"invalid timestamp {value!r}: out of range") from None
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            if text.isdecimal():  # epoch digits, as CSV carries them
                return parse_event_time(int(text))
            raise RecordError(f"invalid timestamp {value!r}") from None
        return parse_event_time(parsed)
    raise RecordError(f"invalid timestamp {value!r}")


def normalise_record(record: Any, *, default_source: str) -> dict[str, Any]:
    """Check one record against the contract and map it to raw columns (without ids)."""
    if not isinstance(record, dict):
        raise RecordError(f"record must be an object, got {type(record).__name__}")
    text = record.get("text")
    if text is None:
        raise RecordError("missing required field 'text'")
    if not isinstance(text, str):
        raise RecordError(f"field 'text' must be a string, got {type(text).__name__}")
    source = record.get("source") or default_source
    if not isinstance(source, str):
        raise RecordError("field 'source' must be a string")
    source_id = record.get("id")
    if source_id is not None and (
        isinstance(source_id, bool) or not isinstance(source_id, str | int)
    ):
        raise RecordError("field 'id' must be a string or an integer")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RecordError("field 'metadata' must be an object")
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS and v is not None}
    merged = {**extra, **metadata}
    return {
        "source": source,
        "source_id": None if source_id in (None, "") else str(source_id),
        "event_time": parse_event_time(record.get("timestamp")),
        "text": text,
        "metadata": json.dumps(merged, sort_keys=True, default=str) if merged else None,
    }


def _decode_text_file(data: bytes) -> tuple[str, str]:
    """UTF-8 when it is; otherwise Windows-1252/Latin-1, so legacy exports still load."""
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(encoding), encoding.removesuffix("-sig")
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")


def _default_source(path: Path) -> str:
    """Records without a `source` are named after their file; loose text files share one."""
    return TEXT_FILES_SOURCE if path.suffix.lower() in TEXT_SUFFIXES else path.stem


def _jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, parsed record or RecordError) for every non-blank line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = f"line {number}"
            raw = line.decode("utf-8", errors="replace").rstrip("\r\n")
            try:
                # utf-8-sig: a byte-order mark (Windows exports) is dropped, not an error
                yield location, json.loads(line.decode("utf-8-sig"))
            except UnicodeDecodeError:
                yield location, RecordError("line is not valid UTF-8", raw)
            except json.JSONDecodeError as error:
                reason = f"invalid JSON: {error.msg} at column {error.colno}"
                yield location, RecordError(reason, raw)


def _table_records(path: Path) -> Iterator[tuple[str, Any]]:
    if path.suffix.lower() == ".csv":
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
    else:
        frame = pl.read_parquet(path)
    if "text" not in frame.columns:
        raise RecordError(f"no 'text' column (columns: {', '.join(frame.columns)})")
    for number, row in enumerate(frame.iter_rows(named=True), start=1):
        yield f"row {number}", row


def _file_records(path: Path, relative: str) -> Iterator[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from _jsonl_records(path)
    elif suffix in TABLE_SUFFIXES:
        yield from _table_records(path)
    else:
        text, encoding = _decode_text_file(path.read_bytes())
        # the path under the landing root names the document: unique across folders and days
        record: dict[str, Any] = {"id": relative, "text": text}
        if encoding != "utf-8":
            record["metadata"] = {"encoding": encoding}
        yield "file", record


def read_landing_files(files: Iterable[Path], *, day: date, root: Path) -> IngestResult:
    """Parse landing files into raw documents plus quarantined records and files."""
    docs: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    files_read = 0
    for path in sorted(files):
        relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            rejected.append(
                {
                    "file": relative,
                    "location": "file",
                    "reason": f"unsupported file type '{path.suffix}'",
                }
            )
            continue
        files_read += 1
        try:
            for location, record in _file_records(path, relative):
                try:
                    if isinstance(record, RecordError):
                        raise record
                    row = normalise_record(record, default_source=_default_source(path))
                except RecordError as error:
                    rejected.append(
                        {
                            "file": relative,
                            "location": location,
                            "reason": str(error),
                            "payload": error.payload
                            if isinstance(record, RecordError)
                            else json.dumps(record, default=str),
                        }
                    )
                    continue
                docs.append({**row, "file": relative, "location": location})
        except (RecordError, pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as error:
            rejected.append(
                {
                    "file": relative,
                    "location": "file",
                    "reason": f"cannot parse file: {type(error).__name__}: {error}"[:500],
                }
            )
            # Records already read from a file that then failed are dropped with it:
            # the file is quarantined whole, so a fixed file re-lands cleanly.
            docs = [doc for doc in docs if doc["file"] != relative]
    return _finish(docs, rejected, day=day, files_read=files_read)


def _finish(
    docs: list[dict[str, Any]], rejected: list[dict[str, Any]], *, day: date, files_read: int
) -> IngestResult:
    seen: dict[str, str] = {}
    kept: list[dict[str, Any]] = []
    for doc in docs:
        doc_id = doc_id_for(doc["source"], doc["source_id"], doc["text"])
        if doc_id in seen:
            rejected.append(
                {
                    "doc_id": doc_id,
                    "file": doc["file"],
                    "location": doc["location"],
                    "reason": f"duplicate doc_id: same source and id (or text) as {seen[doc_id]}",
                    "payload": doc["text"],
                }
            )
            continue
        seen[doc_id] = f"{doc['file']} {doc['location']}"
        kept.append({**doc, "doc_id": doc_id, "ingest_date": day})
    frame = pl.DataFrame(
        [{key: doc.get(key) for key in RAW_SCHEMA} for doc in kept],
        schema=RAW_SCHEMA,
        orient="row",
    )
    quarantine = quarantine_frame(
        [{**row, "stage": STAGE, "ingest_date": day} for row in rejected]
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
    return IngestResult(docs=frame, quarantine=quarantine, files_read=files_read)


def read_landing_day(landing_root: Path, day: date) -> IngestResult:
    """Every file under `<landing_root>/<YYYY-MM-DD>/` (recursively); an absent day is empty."""
    day_dir = landing_root / day.isoformat()
    files = [
        p
        for p in day_dir.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(day_dir).parts)
    ]
    return read_landing_files(files, day=day, root=landing_root)
