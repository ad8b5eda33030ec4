"""`GET /v1/documents/{id}` of a processed document reads its own day only, and within it only
the files that can hold it (issue 23, break 5): other days' files, and files whose doc_id
statistics in the Delta log rule it out, are never opened, so a lookup costs the same
whatever else was submitted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from nlp_assets.api.app import create_app
from nlp_assets.api.config import ApiSettings
from nlp_assets.api.keys import key_store
from nlp_assets.api.results import RAW_ASSET
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.lake import Lake

TODAY = datetime.now(UTC).date()


def predictions(day: str, doc_ids: list[str], label: str = "neutral") -> pl.DataFrame:
    rows = [
        {
            "doc_id": d,
            "ingest_date": datetime.fromisoformat(day).date(),
            "source": "api",
            "lang": "en",
            "is_duplicate": False,
            "sentiment_label": label,
            "sentiment_score": 0.9,
            "entities": [],
        }
        for d in doc_ids
    ]
    return pl.DataFrame(rows, schema=PREDICTIONS_SCHEMA)


def corrupt(path: Path) -> None:
    path.write_bytes(b"not parquet")


@pytest.fixture
def api(tmp_path: Path):
    config = ApiSettings(
        keys_file=str(tmp_path / "api" / "keys.json"),
        landing_dir=str(tmp_path / "landing"),
        lake_dir=str(tmp_path / "lake"),
        reports_dir=str(tmp_path / "reports"),
    )
    _, reader = key_store(config).create("reader", "reader")
    with TestClient(create_app(config)) as client:
        yield client, Lake(config.lake_dir), reader


def holds(path: str, doc_id: str) -> bool:
    return doc_id in pl.read_parquet(path, columns=["doc_id"])["doc_id"].to_list()


def test_a_processed_document_is_found_reading_only_its_own_day_and_part(api) -> None:
    client, lake, reader = api
    wanted = "0123456789abcdef"
    day = (TODAY - timedelta(days=3)).isoformat()  # not the newest: days are searched newest first
    # the API accepted it into that day's landing folder (what POST /v1/documents records)
    client.app.state.services.accepted.record([wanted], f"landing:{day}/api/batch.jsonl")
    # its day: micro-batch parts, one commit each, as the pipeline writes them
    for k in range(13):
        ids = [f"{k:02d}{i:014x}" for i in range(50)] + ([wanted] if k == 7 else [])
        label = "positive" if k == 7 else "neutral"
        for asset in (RAW_ASSET, "predictions"):
            lake.write(asset, day, predictions(day, ids, label), f"p{k}")
    # the other days of the week: predictions and quarantine of other documents
    others = [(TODAY - timedelta(days=back)).isoformat() for back in range(7) if back != 3]
    for other in others:
        lake.write("predictions", other, predictions(other, [f"{other[-2:]:0>16}"]))
        lake.write_quarantine("cleaned_text", other, pl.DataFrame({"doc_id": ["x"]}))

    def status() -> dict:
        response = client.get(
            f"/v1/documents/{wanted}", headers={"Authorization": f"Bearer {reader}"}
        )
        assert response.status_code == 200, response.text
        return response.json()

    assert status()["status"] == "processed"
    # every other day's files, and every file of its day that does not hold it, unreadable
    for other in others:
        for path in lake.files("predictions", [other]) + lake.files(
            "quarantine/cleaned_text", [other]
        ):
            corrupt(Path(path))
    own = lake.files("predictions", [day])
    holding = [path for path in own if holds(path, wanted)]
    assert len(own) == 13 and len(holding) == 1
    for path in own:
        if path not in holding:
            corrupt(Path(path))
    found = status()
    assert found["status"] == "processed" and found["day"] == day
    assert found["prediction"]["sentiment_label"] == "positive"
    # the file it is in, unreadable: the lookup did read it (the test can fail)
    corrupt(Path(holding[0]))
    with pytest.raises(Exception, match=r"(?i)parquet"):
        status()
