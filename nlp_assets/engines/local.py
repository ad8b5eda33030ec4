"""The local engine over one day or a range of days: the kernels in-process, per day where a
kernel's view is the whole day (duplicates, TF-IDF), so a range gives what per-day runs give."""

from __future__ import annotations

from datetime import date

import polars as pl

from nlp_assets.kernels.clean import CleanConfig, CleanResult, clean_documents


def by_day(frame: pl.DataFrame, days: list[date]) -> list[tuple[date, pl.DataFrame]]:
    """The frame split by `ingest_date` over a range; a one-day run keeps its frame whole."""
    if len(days) == 1:
        return [(days[0], frame)]
    return [(day, frame.filter(pl.col("ingest_date") == day)) for day in days]


def clean_days(raw: pl.DataFrame, days: list[date], config: CleanConfig) -> CleanResult:
    if len(days) == 1:
        return clean_documents(raw, days[0], config)
    results = [clean_documents(part, day, config) for day, part in by_day(raw, days)]
    return CleanResult(
        docs=pl.concat([r.docs for r in results]),
        quarantine=pl.concat([r.quarantine for r in results]),
    )
