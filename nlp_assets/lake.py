"""The Parquet lake: where every stage's data lives, and the read API for code outside Dagster.

Layout (`root` is a local folder or any fsspec URL, e.g. ``s3://bucket/nlp``)::

    <root>/<asset>/<YYYY-MM-DD>/<part>.parquet         a daily partition is a set of parts
    <root>/<asset>/data.parquet                        an unpartitioned asset
    <root>/quarantine/<stage>/<YYYY-MM-DD>/<part>.parquet

A whole-day run writes the part ``day`` and removes the others (it recomputed all of them); a
micro-batch writes only the part named after what it covers, so a retried run overwrites its
own part and nothing else. Readers see the day as all its parts together.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import date

import polars as pl
from upath import UPath

DAY_PART = "day"
QUARANTINE = "quarantine"
_PART_NAME = re.compile(r"^[A-Za-z0-9._=-]+$")


class Lake:
    def __init__(self, root: str | UPath):
        self.root = UPath(root)

    # paths -----------------------------------------------------------------------------------
    def day_dir(self, asset: str, day: str) -> UPath:
        return self.root / asset / day

    def part_path(self, asset: str, day: str | None, part: str = DAY_PART) -> UPath:
        if day is None:
            return self.root / asset / "data.parquet"
        if not _PART_NAME.match(part):
            raise ValueError(f"invalid part name {part!r}: use letters, digits and . _ = -")
        return self.day_dir(asset, day) / f"{part}.parquet"

    def parts(self, asset: str, day: str) -> list[UPath]:
        folder = self.day_dir(asset, day)
        if not folder.exists():
            return []
        return sorted(p for p in folder.iterdir() if p.name.endswith(".parquet"))

    # writing ---------------------------------------------------------------------------------
    def write(
        self, asset: str, day: str | None, frame: pl.DataFrame, part: str = DAY_PART
    ) -> UPath:
        """Write a part atomically (temp file, then rename); a whole-day part replaces the day."""
        path = self.part_path(asset, day, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("wb") as handle:
                frame.write_parquet(handle, compression="zstd", statistics=True)
            tmp.rename(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed write leaves neither debris nor a half file
            raise
        if day is not None and part == DAY_PART:
            for other in self.parts(asset, day):
                if other.name != path.name:
                    other.unlink()
        return path

    def write_days(self, asset: str, days: Iterable[str], frame: pl.DataFrame) -> UPath:
        """Write a frame covering several days as one whole-day part per day (split on its
        `ingest_date`); a day without rows gets an empty part. Returns the asset's folder."""
        days = [str(d) for d in days]
        if "ingest_date" not in frame.columns:
            raise ValueError(f"{asset}: a frame covering {len(days)} days needs an ingest_date")
        stray = frame.filter(~pl.col("ingest_date").cast(pl.String).is_in(days))
        if stray.height:
            found = sorted(map(str, stray["ingest_date"].unique().to_list()))
            raise ValueError(f"{asset}: rows of days {found} outside the run's days {days}")
        for day in days:
            self.write(asset, day, frame.filter(pl.col("ingest_date").cast(pl.String) == day))
        return self.root / asset

    def write_quarantine(
        self, stage: str, day: str, frame: pl.DataFrame, part: str = DAY_PART
    ) -> UPath:
        return self.write(f"{QUARANTINE}/{stage}", day, frame, part)

    # reading ---------------------------------------------------------------------------------
    def read_part(self, asset: str, day: str | None, part: str = DAY_PART) -> pl.DataFrame:
        path = self.part_path(asset, day, part)
        if not path.exists():
            scope = f"partition {day}, part {part}" if day else "its only partition"
            raise FileNotFoundError(
                f"{asset} has no data for {scope} at {path}: materialise it first"
            )
        with path.open("rb") as handle:
            return pl.read_parquet(handle)

    def read_day(self, asset: str, day: str, *, missing_ok: bool = False) -> pl.DataFrame:
        parts = self.parts(asset, day)
        if not parts:
            if missing_ok:
                return pl.DataFrame()
            raise FileNotFoundError(
                f"{asset} has no data for {day} under {self.day_dir(asset, day)}: materialise "
                "that partition first"
            )
        frames = []
        for path in parts:
            with path.open("rb") as handle:
                frames.append(pl.read_parquet(handle))
        return pl.concat(frames, how="vertical_relaxed")

    def read_days(self, asset: str, days: Iterable[str | date]) -> pl.DataFrame:
        """Several days as one frame (days with no data are skipped)."""
        frames = [self.read_day(asset, str(d), missing_ok=True) for d in days]
        frames = [f for f in frames if f.width]
        return pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame()

    def read_quarantine(self, stage: str, day: str | date) -> pl.DataFrame:
        return self.read_day(f"{QUARANTINE}/{stage}", str(day), missing_ok=True)
