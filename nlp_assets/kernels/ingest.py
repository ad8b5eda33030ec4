"""Stage 1, raw text: read one day of the landing folder into documents with stable ids.

Supported files: JSON Lines (`.jsonl`, `.ndjson`), CSV, Parquet (one record per line or row, a
`text` field required, `id`, `source`, `timestamp` and `metadata` optional, other fields kept in
`metadata`) and plain text (`.txt`, the whole file is one document).

Every record is accounted for exactly once: a document, or a quarantine row with the reason and
the bytes as they came (`raw`; Parquet rows have no bytes of their own, their `payload` shows the
row as JSON). Any exception while parsing or normalising one record (JSON nested too deep, an
integer of thousands of digits, an overflowing timestamp, invalid UTF-8, lone surrogates) is that
record's reason, never the file's or the day's failure. A malformed CSV row is one quarantined
row: an unterminated quote costs the line it opens on, and the lines after it are read again.

Only regular files inside the day folder are read, opened one folder at a time without following
any symbolic link: links (to files or folders), FIFOs, devices and paths outside the day folder
are refused with a reason and never read. Hidden names (a leading dot: uploads in progress) and
the completion marker `_SUCCESS` are not records.

Caps, checked before parsing (`IngestCaps`, from `NLP_INGEST_MAX_FILE_BYTES`, default 256 MiB,
and `NLP_INGEST_MAX_RECORD_BYTES`, default 4 MiB):
- file cap: a larger file (by fstat, before reading) is one quarantine row keeping its first
  record-cap bytes; a Parquet row group over it (uncompressed) is not read, each of its rows
  quarantined with that reason.
- record cap: a JSONL line, a CSV row (all its lines), a Parquet cell, a TXT file. Lines are read
  with a bounded readline, so a 1 GB line costs the cap, not 1 GB; over the cap is a quarantine
  row with the bytes cut to the cap and `raw_size` the full size.
Memory bound: besides the documents kept (the stage's output) and the quarantined bytes (at most
min(record cap, RAW_MAX_BYTES) per refused record), reading one file holds a few copies of one
record's bytes (each at most the record cap) and that record parsed, which for JSON can take up
to about 25 times its bytes (a 4 MiB line of empty objects: about 100 MiB); a Parquet file, one
row group (at most the file cap uncompressed) and 4,096 of its rows as Python objects. Measured
on a 2-core machine: a file with a 1 GiB JSONL line (file cap raised to 2 GiB) raised peak RSS
by 45 MiB, against 4.1 GiB without the caps; a 4 MiB line of empty JSON objects by 116 MiB.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import reprlib
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nlp_assets import settings
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
    # the W3C trace context the document came with (an API request's span, a Kafka header, a
    # landing record's field), or the run's that read it (nlp_assets.tracing)
    "traceparent": pl.String(),
}

JSONL_SUFFIXES = {".jsonl", ".ndjson"}
TABLE_SUFFIXES = {".csv", ".parquet"}
TEXT_SUFFIXES = {".txt"}
SUPPORTED_SUFFIXES = JSONL_SUFFIXES | TABLE_SUFFIXES | TEXT_SUFFIXES
TEXT_FILES_SOURCE = "text_files"
#: A file of this name in a day folder says "this day is complete" (the landing sensor runs it
#: at once); it is not a record.
COMPLETION_MARKER = "_SUCCESS"
KNOWN_FIELDS = {"id", "text", "source", "timestamp", "metadata", "traceparent"}
#: A W3C trace context (version 00, ids not all zero); any other value is dropped, never refused.
TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
BLANK_TEXT = "field 'text' is empty or whitespace only"
MAX_REASON_CHARS = 500
_PARQUET_BATCH_ROWS = 4_096
_SKIP_CHUNK = 1 << 16
_EPOCH = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SIZED_TYPES = (
    pa.types.is_string,
    pa.types.is_large_string,
    pa.types.is_binary,
    pa.types.is_large_binary,
)
_FILE_KINDS = {
    stat.S_IFDIR: "folder",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


class RecordError(ValueError):
    """A record that breaks the landing contract; its message is the quarantine reason. `raw`
    and `raw_size` are the bytes to keep when the record has none of its own (a Parquet cell)."""

    def __init__(self, reason: str, raw: bytes | None = None, raw_size: int | None = None):
        super().__init__(reason)
        self.raw = raw
        self.raw_size = raw_size


class Refused(RecordError):
    """A file not read (a link, not a regular file, outside the day, unsupported, over the cap)."""


@dataclass(frozen=True)
class IngestCaps:
    """Byte caps checked before parsing (see the module docstring)."""

    file_bytes: int
    record_bytes: int

    @classmethod
    def from_settings(cls) -> IngestCaps:
        return cls(settings.ingest_max_file_bytes(), settings.ingest_max_record_bytes())


@dataclass(frozen=True)
class IngestResult:
    docs: pl.DataFrame
    quarantine: pl.DataFrame
    files_read: int


class _Item(NamedTuple):
    """One record of a file: where it is, its bytes as they came, and how to parse it (called
    where exceptions become quarantine rows)."""

    location: str
    raw: bytes | None
    raw_size: int | None
    parse: Callable[[], Any]


class _Line(NamedTuple):
    number: int
    start: int  # byte offsets in the file: where the line starts, where the next one does
    end: int
    data: bytes  # with its line ending; cut to the cap when `over`
    size: int  # bytes of the whole line, without its ending
    over: bool
    quotes: int  # double quotes in the whole line
    after_quote: bytes | None  # the byte after its first quote (b"" at the end), None: no quote


class _RowTooLong(Exception):
    pass


def doc_id_for(source: str, source_id: str | None, text: str) -> str:
    """Stable id: hash of source and source id, or of the text when the record has no id."""
    key = f"{source}\x1f{source_id}" if source_id else f"text\x1f{text}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def parse_event_time(value: Any) -> datetime | None:
    """ISO 8601 (naive means UTC), epoch seconds or milliseconds (by magnitude, also as digit
    strings: digits are always an epoch, never an ISO date), a datetime."""
    if value is None or value == "":
        return None
    try:
        return _event_time(value)
    except RecordError:
        raise
    except (ValueError, OverflowError, OSError):  # NaN, infinity, years outside 1..9999
        raise RecordError(f"invalid timestamp {_show(value)}: out of range") from None


def _event_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        raise RecordError(f"invalid timestamp {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000 if abs(value) > 1e11 else value, tz=UTC)
    if isinstance(value, str):
        text = value.strip()
        if _EPOCH.fullmatch(text):  # "1722082021420" is milliseconds, not the year 1722
            return _event_time(float(text) if "." in text else int(text))
        try:
            return _event_time(datetime.fromisoformat(text))
        except ValueError:
            raise RecordError(f"invalid timestamp {_show(value)}") from None
    raise RecordError(f"invalid timestamp {_show(value)}")


def normalise_record(record: Any, *, default_source: str) -> dict[str, Any]:
    """Check one record against the contract and map it to raw columns (without ids).

    Raises `RecordError` (its message is the reason) for every record it cannot take, whatever
    went wrong inside, so callers quarantine or dead-letter on that one exception. Text that is
    empty or only whitespace, control or format characters (zero-width space, BOM, soft hyphen,
    NUL) is refused with `BLANK_TEXT`, for landing files and Kafka messages alike.
    """
    try:
        return _normalise(record, default_source)
    except RecordError:
        raise
    except Exception as error:  # deep nesting, huge integers in metadata...
        raise RecordError(_cut(f"invalid record: {_describe(error)}")) from None


def _normalise(record: Any, default_source: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordError(f"record must be an object, got {type(record).__name__}")
    text = record.get("text")
    if text is None:
        raise RecordError("missing required field 'text'")
    if not isinstance(text, str):
        raise RecordError(f"field 'text' must be a string, got {type(text).__name__}")
    if _blank(text):
        raise RecordError(BLANK_TEXT)
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
    for name, value in (("text", text), ("source", source), ("id", source_id)):
        if isinstance(value, str) and not value.isascii() and _SURROGATE.search(value):
            raise RecordError(f"field '{name}' is not valid Unicode (a lone surrogate)")
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS and v is not None}
    merged = {**extra, **metadata}
    return {
        "source": source,
        "source_id": None if source_id in (None, "") else str(source_id),
        "event_time": parse_event_time(record.get("timestamp")),
        "text": text,
        "metadata": json.dumps(merged, sort_keys=True, default=str) if merged else None,
        "traceparent": _traceparent(record.get("traceparent")),
    }


def traceparent_column(frame: pl.DataFrame) -> pl.Expr:
    """The frame's `traceparent` column, or nulls for a table written before traces."""
    if "traceparent" in frame.columns:
        return pl.col("traceparent")
    return pl.lit(None, pl.String).alias("traceparent")


def _traceparent(value: Any) -> str | None:
    return value if isinstance(value, str) and TRACEPARENT.fullmatch(value) else None


def _blank(text: str) -> bool:
    """Nothing to read: only whitespace, control (NUL...) and format (zero-width...) chars."""
    return all(char.isspace() or unicodedata.category(char) in ("Cc", "Cf") for char in text)


# readers: one per format, each yields an _Item per record ------------------------------------
def _lines(handle: BinaryIO, cap: int, number: int = 0) -> Iterator[_Line]:
    """Physical lines read with a bounded readline: a line longer than `cap` is cut to it and
    the rest skipped (still counted in `size`, `quotes` and `after_quote`), so a 1 GB line
    never sits in memory."""
    start = handle.tell()
    while line := handle.readline(cap + 2):  # the cap, a CR LF, and no more
        number += 1
        length, quotes, last = len(line), line.count(b'"'), line
        at = line.find(b'"')
        after = None if at < 0 else line[at + 1 : at + 2]
        if length == cap + 2 and not line.endswith(b"\n"):
            while chunk := handle.readline(_SKIP_CHUNK):
                if after is None and (at := chunk.find(b'"')) >= 0:
                    after = chunk[at + 1 : at + 2]
                elif after == b"":  # the quote ended the last chunk
                    after = chunk[:1]
                length, quotes, last = length + len(chunk), quotes + chunk.count(b'"'), chunk
                if chunk.endswith(b"\n"):
                    break
        size = length - (2 if last.endswith(b"\r\n") else 1 if last.endswith(b"\n") else 0)
        data = line[:cap] if size > cap else line
        yield _Line(number, start, start + length, data, size, size > cap, quotes, after)
        start += length


def _over(what: str, size: int, cap: int) -> str:
    return f"{what} of {size} bytes is over the cap of {cap} bytes"


def _fail(error: Exception) -> Any:
    raise error


def _jsonl_items(handle: BinaryIO, cap: int) -> Iterator[_Item]:
    for line in _lines(handle, cap):
        raw = line.data[: line.size]
        if not (line.over or raw.strip()):
            continue  # blank lines are not records
        parse = (
            partial(_fail, RecordError(_over("line", line.size, cap)))
            if line.over
            else partial(_json_record, raw)
        )
        yield _Item(f"line {line.number}", raw, line.size, parse)


def _json_record(raw: bytes) -> Any:
    try:
        # utf-8-sig: a byte-order mark (Windows exports) is dropped, not an error
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise RecordError("line is not valid UTF-8") from None
    except json.JSONDecodeError as error:
        raise RecordError(f"invalid JSON: {error.msg} at column {error.colno}") from None


def _csv_items(handle: BinaryIO, cap: int) -> Iterator[_Item]:
    """Rows as the csv module reads them, fed one physical line at a time so each row knows its
    lines (its raw bytes). A row that fails to parse (an unterminated quote) gives up only its
    first line: reading resumes on the line after it. A row over the cap is skipped to the line
    that balances its quotes (one quarantined row), or, when none does, is an unterminated
    quote too."""
    csv.field_size_limit(max(csv.field_size_limit(), cap))
    lines = _lines(handle, cap)
    header: list[str] | None = None
    may_skip = True  # after a skip that read to the end in vain, no more (bounded work)
    while True:
        taken: list[_Line] = []
        try:
            fields = next(csv.reader(_row_lines(lines, taken, cap), strict=True))
            problem = None
        except StopIteration:
            return
        except (csv.Error, _RowTooLong) as error:
            fields, problem = [], error
        first = taken[0]
        raw = b"".join(line.data for line in taken)
        if problem is None and not fields:
            continue  # a blank line is not a record
        if problem is None and header is None:
            header = _csv_header(fields)
            continue
        if problem is None:
            assert header is not None  # the first row that parsed became the header above
            raw_size = taken[-1].start + taken[-1].size - first.start
            parse = partial(_csv_record, header, fields)
            yield _Item(f"line {first.number}", raw[:raw_size], raw_size, parse)
            continue
        last = None
        if isinstance(problem, _RowTooLong) and may_skip:  # where does this long row end?
            if len(taken) > 1:  # csv is inside a quoted field; it has not seen the last line
                last, at_end = _row_end(chain(taken[-1:], lines))
            else:  # one line over the cap: a quoted field left open there goes on
                last, at_end = _row_end(lines) if first.quotes % 2 else (first, False)
            may_skip = not at_end
        if last is not None:
            raw_size = last.start + last.size - first.start
            reason = _over("line" if last is first else "row", raw_size, cap)
        else:  # only its first line is lost: reading resumes on the next one
            reason = _csv_problem(problem, first, cap, several_lines=len(taken) > 1)
            raw_size = first.size
            if len(taken) > 1 or isinstance(problem, _RowTooLong):
                handle.seek(first.end)
                lines = _lines(handle, cap, first.number)
        if header is None:
            raise RecordError(f"cannot read the CSV header: {reason}")
        parse = partial(_fail, RecordError(reason))
        yield _Item(f"line {first.number}", raw[: min(raw_size, cap)], raw_size, parse)


def _row_lines(lines: Iterator[_Line], taken: list[_Line], cap: int) -> Iterator[str]:
    size = 0
    for line in lines:
        taken.append(line)
        size += line.size
        if line.over or size > cap:
            raise _RowTooLong
        yield line.data.decode("utf-8", "surrogateescape")  # bad bytes: the row's reason later


def _row_end(lines: Iterable[_Line]) -> tuple[_Line | None, bool]:
    """Where a row left inside a quoted field at the cap ends: the first of `lines` with an odd
    number of quotes, read without keeping anything. (None, False) when the first quote met cannot
    close a field (a quote then a letter: the open quote was never closed); (None, True) at the
    end of the file."""
    checked = False
    for line in lines:
        if not checked and line.after_quote is not None:
            checked = True
            if line.after_quote not in (b'"', b",", b"\r", b"\n", b""):
                return None, False
        if line.quotes % 2:
            return line, False
    return None, True


def _csv_problem(error: Exception, first: _Line, cap: int, several_lines: bool = False) -> str:
    if isinstance(error, _RowTooLong) and not several_lines:
        return _over("line", first.size, cap)
    if isinstance(error, _RowTooLong):
        return f"malformed CSV row: unterminated quote (the row passes the cap of {cap} bytes)"
    if str(error) == "unexpected end of data":
        return "malformed CSV row: unterminated quote (no closing quote before the end)"
    return f"malformed CSV row: {'unterminated quote: ' if several_lines else ''}{error}"


def _csv_header(fields: list[str]) -> list[str]:
    names = [fields[0].removeprefix("\ufeff"), *fields[1:]]
    if any(_SURROGATE.search(name) for name in names):
        raise RecordError("the CSV header is not valid UTF-8")
    if len(set(names)) != len(names):
        raise RecordError(f"duplicate column names (columns: {', '.join(names)})")
    if "text" not in names:
        raise RecordError(f"no 'text' column (columns: {', '.join(names)})")
    return names


def _csv_record(header: list[str], fields: list[str]) -> dict[str, Any]:
    if len(fields) != len(header):
        raise RecordError(f"row has {len(fields)} fields, the header has {len(header)}")
    if any(not field.isascii() and _SURROGATE.search(field) for field in fields):
        raise RecordError("row is not valid UTF-8")  # its bad bytes, escaped by _row_lines
    return {name: value or None for name, value in zip(header, fields, strict=True)}


def _parquet_items(handle: BinaryIO, caps: IngestCaps) -> Iterator[_Item]:
    """Row group by row group, in batches: never the whole file at once."""
    parquet = pq.ParquetFile(handle)
    names = parquet.schema_arrow.names
    if "text" not in names:
        raise RecordError(f"no 'text' column (columns: {', '.join(names)})")
    number = 0
    for group in range(parquet.num_row_groups):
        meta = parquet.metadata.row_group(group)
        if meta.total_byte_size > caps.file_bytes:  # not read: each of its rows refused
            over = RecordError(_over(f"row group {group}", meta.total_byte_size, caps.file_bytes))
            for _ in range(meta.num_rows):
                number += 1
                yield _Item(f"row {number}", None, None, partial(_fail, over))
            continue
        batches = parquet.iter_batches(
            batch_size=_PARQUET_BATCH_ROWS, row_groups=[group], use_threads=False
        )
        for batch in batches:
            big = _big_cells(batch, caps.record_bytes)
            try:
                rows: list[dict[str, Any]] | None = batch.to_pylist()
            except Exception:  # a value Python cannot hold: converted row by row, to blame one
                rows = None
            for index in range(batch.num_rows):
                number += 1
                parse = partial(_parquet_row, batch, index, rows, big, caps.record_bytes)
                yield _Item(f"row {number}", None, None, parse)


def _big_cells(batch: pa.RecordBatch, cap: int) -> dict[str, list[int | None]]:
    """Byte lengths of the string and binary columns that hold a cell over the cap."""
    big = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if any(is_kind(column.type) for is_kind in _SIZED_TYPES):
            lengths = pc.binary_length(column)
            if (pc.max(lengths).as_py() or 0) > cap:
                big[name] = lengths.to_pylist()
    return big


def _parquet_row(
    batch: pa.RecordBatch,
    index: int,
    rows: list[dict[str, Any]] | None,
    big: dict[str, list[int | None]],
    cap: int,
) -> Any:
    for name, lengths in big.items():
        size = lengths[index] or 0
        if size > cap:
            raw = batch.column(name)[index].as_buffer()[:cap].to_pybytes()
            raise RecordError(_over(f"cell '{name}'", size, cap), raw=raw, raw_size=size)
    return rows[index] if rows is not None else batch.slice(index, 1).to_pylist()[0]


def _text_items(handle: BinaryIO, relative: str, cap: int) -> Iterator[_Item]:
    data = handle.read(cap + 1)
    if len(data) > cap:
        size = max(os.fstat(handle.fileno()).st_size, len(data))
        yield _Item("file", data[:cap], size, partial(_fail, RecordError(_over("file", size, cap))))
    else:
        yield _Item("file", data, len(data), partial(_text_record, data, relative))


def _text_record(data: bytes, relative: str) -> dict[str, Any]:
    text, encoding = _decode_text_file(data)
    # the path under the landing root names the document: unique across folders and days
    record: dict[str, Any] = {"id": relative, "text": text}
    if encoding != "utf-8":
        record["metadata"] = {"encoding": encoding}
    return record


def _decode_text_file(data: bytes) -> tuple[str, str]:
    """UTF-8 when it is; otherwise Windows-1252/Latin-1, so legacy exports still load."""
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(encoding), encoding.removesuffix("-sig")
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")


def _file_items(handle: BinaryIO, path: Path, relative: str, caps: IngestCaps) -> Iterator[_Item]:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _jsonl_items(handle, caps.record_bytes)
    if suffix == ".csv":
        return _csv_items(handle, caps.record_bytes)
    if suffix == ".parquet":
        return _parquet_items(handle, caps)
    return _text_items(handle, relative, caps.record_bytes)


# files: only regular ones inside the day folder ----------------------------------------------
def landing_entries(day_dir: Path) -> list[Path]:
    """What a day folder holds, links not followed: its files, under every real sub-folder, and
    its symbolic links to files or folders (read_landing_files refuses them with a reason).
    Hidden names (a leading dot) and the completion marker are left out."""
    if day_dir.is_symlink():
        return [day_dir]
    entries = []
    for folder, subfolders, names in os.walk(day_dir):  # never descends into a linked folder
        base = Path(folder)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        entries += [base / name for name in subfolders if (base / name).is_symlink()]
        entries += [
            base / name for name in names if not name.startswith(".") and name != COMPLETION_MARKER
        ]
    return sorted(entries)


def _open_regular(path: Path, day_dir: Path) -> BinaryIO:
    """Open a regular file inside `day_dir`, each folder on the way opened relative to the one
    above it without following links, so a link swapped in meanwhile is refused as well."""
    try:
        parts = Path(os.path.normpath(path)).relative_to(os.path.normpath(day_dir)).parts
    except ValueError:
        raise Refused(f"outside the day folder {day_dir.name}: not read") from None
    names = (day_dir.name, *parts)
    folder = os.open(day_dir.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for depth, name in enumerate(names):
            last = depth == len(names) - 1
            mode = os.lstat(name, dir_fd=folder).st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink(name, dir_fd=folder)
                raise Refused(f"symbolic link to {target!r}: not followed")
            if last and not stat.S_ISREG(mode):
                kind = _FILE_KINDS.get(stat.S_IFMT(mode), "special file")
                raise Refused(f"not a regular file ({kind}): not read")
            flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            opened = os.open(name, flags, dir_fd=folder)
            os.close(folder)
            folder = opened
        if not stat.S_ISREG(os.fstat(folder).st_mode):  # replaced between lstat and open
            raise Refused("not a regular file: not read")
        handle, folder = os.fdopen(folder, "rb"), -1
        return handle
    finally:
        if folder >= 0:
            os.close(folder)


# one place where an exception becomes a quarantine row ----------------------------------------
def _refusal(
    file: str, error: Exception, item: _Item | None = None, record: Any = None
) -> dict[str, Any]:
    """The quarantine row for a record (`item`) or a whole file that failed with `error`."""
    if isinstance(error, Refused) or (item is not None and isinstance(error, RecordError)):
        reason = str(error)
    else:
        reason = f"cannot parse {'record' if item else 'file'}: {_describe(error)}"
    row: dict[str, Any] = {"file": file, "location": item.location if item else "file"}
    row["reason"] = _cut(reason)
    raw = getattr(error, "raw", None)
    raw_size = getattr(error, "raw_size", None)
    if raw is None and item is not None:
        raw, raw_size = item.raw, item.raw_size
    if raw is not None:
        row["raw"] = raw
        if raw_size is not None:
            row["raw_size"] = raw_size
    elif record is not None:
        row["payload"] = _preview(record)
    return row


def _describe(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:  # an exception whose message cannot be shown
        return type(error).__name__


def _cut(text: str) -> str:
    return text[:MAX_REASON_CHARS]


def _show(value: Any) -> str:
    """A value for a reason: short, and never an error itself (a huge int has no repr)."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _preview(record: Any) -> str:
    try:
        return json.dumps(record, default=str, ensure_ascii=False)
    except Exception:
        return reprlib.repr(record)


# the day --------------------------------------------------------------------------------------
def read_landing_files(
    files: Iterable[Path], *, day: date, root: Path, caps: IngestCaps | None = None
) -> IngestResult:
    """Parse landing files of `day` (regular files under `<root>/<day>/`) into raw documents
    plus quarantined records and files."""
    caps = caps or IngestCaps.from_settings()
    day_dir = root / day.isoformat()
    docs: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    seen: dict[str, str] = {}  # doc_id -> where it was first read
    files_read = 0
    for path in sorted(files):
        normal = Path(os.path.normpath(path))
        relative = normal.relative_to(root).as_posix() if normal.is_relative_to(root) else str(path)
        try:
            with _open_regular(path, day_dir) as handle:
                if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                    raise Refused(f"unsupported file type '{path.suffix}'")
                size = os.fstat(handle.fileno()).st_size
                if size > caps.file_bytes:
                    head = handle.read(caps.record_bytes)
                    raise Refused(_over("file", size, caps.file_bytes), raw=head, raw_size=size)
                files_read += 1
                found = _read_file(handle, path, relative, caps, seen)
        except Exception as error:
            # Refused, or failed part way: quarantined whole, none of its records kept, so a
            # fixed file re-lands cleanly
            rejected.append(_refusal(relative, error))
            continue
        docs += found[0]
        rejected += found[1]
        seen.update(found[2])
    return _finish(docs, rejected, day=day, files_read=files_read)


def _read_file(
    handle: BinaryIO, path: Path, relative: str, caps: IngestCaps, seen: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """(documents, quarantine rows, doc_ids first read here) of one file."""
    source = TEXT_FILES_SOURCE if path.suffix.lower() in TEXT_SUFFIXES else path.stem
    docs: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    here: dict[str, str] = {}
    for item in _file_items(handle, path, relative, caps):
        record = None
        try:
            record = item.parse()
            row = normalise_record(record, default_source=source)
            doc_id = doc_id_for(row["source"], row["source_id"], row["text"])
        except Exception as error:  # whatever one record raises is that record's reason
            rejected.append(_refusal(relative, error, item, record))
            continue
        first = seen.get(doc_id) or here.get(doc_id)
        if first is not None:
            rejected.append(
                {
                    "doc_id": doc_id,
                    "file": relative,
                    "location": item.location,
                    "reason": f"duplicate doc_id: same source and id (or text) as {first}",
                    "payload": row["text"],
                    "raw": item.raw,
                }
            )
            continue
        here[doc_id] = f"{relative} {item.location}"
        docs.append({**row, "doc_id": doc_id, "file": relative})
    return docs, rejected, here


def _finish(
    docs: list[dict[str, Any]], rejected: list[dict[str, Any]], *, day: date, files_read: int
) -> IngestResult:
    frame = pl.DataFrame(
        [{**{key: doc.get(key) for key in RAW_SCHEMA}, "ingest_date": day} for doc in docs],
        schema=RAW_SCHEMA,
        orient="row",
    )
    quarantine = quarantine_frame(
        [{**row, "stage": STAGE, "ingest_date": day} for row in rejected]
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]
    return IngestResult(docs=frame, quarantine=quarantine, files_read=files_read)


def read_landing_day(
    landing_root: Path, day: date, *, caps: IngestCaps | None = None
) -> IngestResult:
    """Every file under `<landing_root>/<YYYY-MM-DD>/` (recursively); an absent day is empty."""
    entries = landing_entries(landing_root / day.isoformat())
    return read_landing_files(entries, day=day, root=landing_root, caps=caps)
