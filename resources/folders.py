"""A local folder organised by day: the landing folder and the reports folder."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field


class DayFolder(dg.ConfigurableResource):
    """`<root>/<YYYY-MM-DD>/` holds what belongs to one ingestion day."""

    root: str = Field(description="Folder with one sub-folder per ingestion day (YYYY-MM-DD).")

    @property
    def path(self) -> Path:
        return Path(self.root)

    def day_dir(self, day: str) -> Path:
        return self.path / day
