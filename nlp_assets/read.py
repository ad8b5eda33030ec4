"""Read the pipeline's outputs from code outside Dagster: a day or a date range as polars.

    from nlp_assets.read import read_predictions, read_aggregates

    week = read_predictions("2026-11-16", "2026-11-20")        # inclusive range
    today = read_aggregates("2026-11-18", lake="s3://bucket/nlp")

    as_of = read_predictions("2026-11-16", as_of=12)          # the table at version 12
    then = read_predictions("2026-11-16", as_of="2026-11-20T08:00:00Z")  # or at a time

A thin layer over the Delta tables (`nlp_assets.lake.Lake.read_days`); the lake root defaults to
`NLP_LAKE_DIR` / `$NLP_DATA_DIR/lake`, as the pipeline writes it. A range with no data gives an
empty frame with the stage's columns, so downstream code need not special-case it. Any engine
can read the same tables without this module (docs/lake.md).

Reading while the pipeline writes is safe: a range is read from one version of the table (before
a commit or after it, never a mix), so no lock is needed.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
from upath import UPath

from nlp_assets import settings
from nlp_assets.kernels.aggregate import AGGREGATES_SCHEMA
from nlp_assets.kernels.clean import CLEANED_SCHEMA
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.lake import AsOf, Lake

#: Assets this API reads, with the columns an empty result carries.
READABLE: dict[str, dict[str, pl.DataType]] = {
    "cleaned_text": CLEANED_SCHEMA,
    "predictions": PREDICTIONS_SCHEMA,
    "aggregates": AGGREGATES_SCHEMA,
}
#: A guard against an accidental decade-long scan.
MAX_DAYS = 3660


def _as_date(value: str | date, name: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a date or 'YYYY-MM-DD', got {value!r}") from None


def days_between(start: str | date, end: str | date | None = None) -> list[str]:
    """ISO days from `start` to `end` inclusive (just `start` when `end` is None)."""
    first = _as_date(start, "start")
    last = _as_date(end, "end") if end is not None else first
    if last < first:
        raise ValueError(f"end {last} is before start {first}")
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise ValueError(f"{count} days requested; read at most {MAX_DAYS} at a time")
    return [(first + timedelta(days=i)).isoformat() for i in range(count)]


def read_asset(
    asset: str,
    start: str | date,
    end: str | date | None = None,
    *,
    lake: str | UPath | Lake | None = None,
    strict: bool = False,
    as_of: AsOf = None,
) -> pl.DataFrame:
    """One asset for a day or an inclusive date range, all parts of each day.

    Days without data are skipped, or raise `FileNotFoundError` naming them when `strict`.
    `as_of`: the table as it was at that version (int) or time (datetime or ISO string).
    """
    if asset not in READABLE:
        raise ValueError(f"cannot read {asset!r}: choose one of {sorted(READABLE)}")
    store = lake if isinstance(lake, Lake) else Lake(lake or settings.lake_dir())
    days = days_between(start, end)
    if strict:
        rows = store.rows_by_day(asset, as_of=as_of)
        missing = [day for day in days if not rows.get(day)]
        if missing:
            raise FileNotFoundError(
                f"{asset} has no data for {', '.join(missing)} under {store.root / asset}: "
                "materialise those partitions first"
            )
    frame = store.read_days(asset, days, as_of=as_of)
    if not frame.width:
        return pl.DataFrame(schema=READABLE[asset])
    return frame


def read_predictions(
    start: str | date,
    end: str | date | None = None,
    *,
    lake: str | UPath | Lake | None = None,
    strict: bool = False,
    as_of: AsOf = None,
) -> pl.DataFrame:
    """Per-document predictions (sentiment, entities, models) for a day or date range."""
    return read_asset("predictions", start, end, lake=lake, strict=strict, as_of=as_of)


def read_aggregates(
    start: str | date,
    end: str | date | None = None,
    *,
    lake: str | UPath | Lake | None = None,
    strict: bool = False,
    as_of: AsOf = None,
) -> pl.DataFrame:
    """Per day x language x sentiment label aggregates for a day or date range."""
    return read_asset("aggregates", start, end, lake=lake, strict=strict, as_of=as_of)


def read_documents(
    start: str | date,
    end: str | date | None = None,
    *,
    lake: str | UPath | Lake | None = None,
    strict: bool = False,
    as_of: AsOf = None,
) -> pl.DataFrame:
    """Cleaned documents (text, language, duplicate marks) for a day or date range."""
    return read_asset("cleaned_text", start, end, lake=lake, strict=strict, as_of=as_of)
