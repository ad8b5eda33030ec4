"""The daily report: charts, HTML, exports and manifest, on small in-memory frames."""

from __future__ import annotations

import base64
import io
import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from nlp_assets.kernels.report import (
    CHART_DPI,
    CHART_SIZE_IN,
    CHARTS,
    MANIFEST_SCHEMA,
    markdown_preview,
    render_charts,
    write_report,
)

DAY = date(2024, 5, 1)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_PX = (round(CHART_SIZE_IN[0] * CHART_DPI), round(CHART_SIZE_IN[1] * CHART_DPI))
INJECTION = "<script>alert('x')</script>"

ENTITY = pl.Struct(
    {"text": pl.String, "label": pl.String, "start_char": pl.Int64, "end_char": pl.Int64}
)
PREDICTIONS_SCHEMA = {
    "doc_id": pl.String,
    "ingest_date": pl.Date,
    "source": pl.String,
    "lang": pl.String,
    "is_duplicate": pl.Boolean,
    "sentiment_label": pl.String,
    "sentiment_score": pl.Float64,
    "sentiment_model": pl.String,
    "sentiment_model_version": pl.String,
    "entities": pl.List(ENTITY),
    "ner_model": pl.String,
    "ner_model_version": pl.String,
    "skipped_reason": pl.String,
}
AGGREGATES_SCHEMA = {
    "ingest_date": pl.Date,
    "lang": pl.String,
    "sentiment_label": pl.String,
    "n_docs": pl.Int64,
    "n_duplicates": pl.Int64,
    "mean_sentiment_score": pl.Float64,
    "top_entities": pl.List(pl.Struct({"text": pl.String, "label": pl.String, "count": pl.Int64})),
    "top_ngrams": pl.List(pl.Struct({"ngram": pl.String, "count": pl.Int64})),
}


def entity(text: str, label: str, start: int = 0) -> dict[str, object]:
    return {"text": text, "label": label, "start_char": start, "end_char": start + len(text)}


def prediction(
    doc_id: str,
    *,
    source: str = "rss",
    lang: str = "en",
    label: str | None = "positive",
    score: float | None = 0.9,
    entities: list[dict[str, object]] | None = None,
    duplicate: bool = False,
) -> dict[str, object]:
    return {
        "doc_id": doc_id,
        "ingest_date": DAY,
        "source": source,
        "lang": lang,
        "is_duplicate": duplicate,
        "sentiment_label": label,
        "sentiment_score": score,
        "sentiment_model": "distilbert-sst2",
        "sentiment_model_version": "rev-abc123",
        "entities": entities or [],
        "ner_model": "en_core_web_sm",
        "ner_model_version": "3.8.0",
        "skipped_reason": None if label else "unsupported_language",
    }


@pytest.fixture
def predictions() -> pl.DataFrame:
    rows = [
        prediction("d1", entities=[entity("Acme Corp", "ORG"), entity("Paris", "GPE", 20)]),
        prediction("d2", label="negative", score=0.1, entities=[entity("Acme Corp", "ORG")]),
        prediction("d3", source="api", entities=[entity(INJECTION, "PERSON")]),
        prediction("d4", source="api", duplicate=True, entities=[entity("Paris", "GPE")]),
        prediction(
            "d5", lang="de", label="negative", score=0.3, entities=[entity("$5 $x", "MONEY")]
        ),
        prediction("d6", lang="xx", label=None, score=None),
    ]
    return pl.DataFrame(rows, schema=PREDICTIONS_SCHEMA, orient="row")


@pytest.fixture
def aggregates() -> pl.DataFrame:
    rows = [
        {
            "ingest_date": DAY,
            "lang": "en",
            "sentiment_label": "positive",
            "n_docs": 3,
            "n_duplicates": 1,
            "mean_sentiment_score": 0.9,
            "top_entities": [
                {"text": "Acme Corp", "label": "ORG", "count": 1},
                {"text": INJECTION, "label": "PERSON", "count": 1},
            ],
            "top_ngrams": [{"ngram": "acme corp", "count": 2}],
        },
        {
            "ingest_date": DAY,
            "lang": "xx",
            "sentiment_label": None,
            "n_docs": 1,
            "n_duplicates": 0,
            "mean_sentiment_score": None,
            "top_entities": [],
            "top_ngrams": [],
        },
    ]
    return pl.DataFrame(rows, schema=AGGREGATES_SCHEMA, orient="row")


def assert_png(data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == EXPECTED_PX


def test_render_charts_gives_every_chart_as_png(predictions: pl.DataFrame) -> None:
    charts = render_charts(predictions)
    assert tuple(charts) == CHARTS
    for png in charts.values():
        assert_png(png)


@pytest.mark.parametrize("case", ["empty_day", "no_entities", "all_skipped"])
def test_render_charts_never_crashes_on_thin_days(predictions: pl.DataFrame, case: str) -> None:
    if case == "empty_day":
        frame = predictions.clear()
    elif case == "no_entities":
        frame = predictions.with_columns(pl.lit([], dtype=pl.List(ENTITY)).alias("entities"))
    else:
        frame = predictions.with_columns(
            pl.lit(None, pl.String).alias("sentiment_label"),
            pl.lit(None, pl.Float64).alias("sentiment_score"),
        )
    for png in render_charts(frame).values():
        assert_png(png)


def test_write_report_writes_every_file_and_manifest(
    tmp_path: Path, predictions: pl.DataFrame, aggregates: pl.DataFrame
) -> None:
    out_dir = tmp_path / "report" / "2024-05-01"
    manifest = write_report(DAY, predictions, aggregates, out_dir, {"ingest": 2, "nlp": 0})

    assert manifest.schema == pl.Schema(MANIFEST_SCHEMA)
    expected = {"report_html", *(f"chart_{name}" for name in CHARTS)} | {
        f"{table}_{fmt}"
        for table in ("predictions", "aggregates")
        for fmt in ("parquet", "json", "csv")
    }
    assert set(manifest["artifact"]) == expected
    assert manifest.height == len(expected)
    assert manifest["ingest_date"].to_list() == [DAY] * manifest.height
    for row in manifest.iter_rows(named=True):
        path = Path(row["path"])
        assert path.is_absolute() and path.is_file()
        assert path.stat().st_size == row["bytes"] > 0
        assert path.suffix == f".{row['format']}"
    on_disk = {p.resolve() for p in out_dir.rglob("*") if p.is_file()}
    assert on_disk == {Path(p) for p in manifest["path"]}

    for name in CHARTS:
        assert_png((out_dir / "charts" / f"{name}.png").read_bytes())


def test_html_is_self_contained_and_escaped(
    tmp_path: Path, predictions: pl.DataFrame, aggregates: pl.DataFrame
) -> None:
    write_report(DAY, predictions, aggregates, tmp_path, {"parse": 3})
    page = (tmp_path / "report.html").read_text(encoding="utf-8")

    for name in CHARTS:
        png = (tmp_path / "charts" / f"{name}.png").read_bytes()
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert "2024-05-01" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script" not in page
    assert "http://" not in page and "https://" not in page
    for text in ("distilbert-sst2", "rev-abc123", "en_core_web_sm", "3.8.0", "parse", "api"):
        assert text in page


def test_quarantine_section_only_when_given(
    tmp_path: Path, predictions: pl.DataFrame, aggregates: pl.DataFrame
) -> None:
    write_report(DAY, predictions, aggregates, tmp_path)
    assert "Quarantine" not in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_exports_round_trip(
    tmp_path: Path, predictions: pl.DataFrame, aggregates: pl.DataFrame
) -> None:
    write_report(DAY, predictions, aggregates, tmp_path)
    exports = tmp_path / "exports"

    for name, frame in (("predictions", predictions), ("aggregates", aggregates)):
        assert pl.read_parquet(exports / f"{name}.parquet").equals(frame)

        records = json.loads((exports / f"{name}.json").read_text(encoding="utf-8"))
        assert isinstance(records, list) and len(records) == frame.height
        assert records[0]["ingest_date"] == "2024-05-01"

        csv = pl.read_csv(exports / f"{name}.csv", infer_schema=False)
        assert csv.height == frame.height

    records = json.loads((exports / "predictions.json").read_text(encoding="utf-8"))
    assert [r["entities"] for r in records] == predictions["entities"].to_list()
    csv = pl.read_csv(exports / "predictions.csv", infer_schema=False)
    assert [json.loads(cell) for cell in csv["entities"]] == predictions["entities"].to_list()
    csv = pl.read_csv(exports / "aggregates.csv", infer_schema=False)
    assert [json.loads(cell) for cell in csv["top_ngrams"]] == aggregates["top_ngrams"].to_list()


@pytest.mark.parametrize("case", ["empty_day", "no_entities"])
def test_thin_days_still_produce_a_report(
    tmp_path: Path, predictions: pl.DataFrame, aggregates: pl.DataFrame, case: str
) -> None:
    if case == "empty_day":
        predictions, aggregates = predictions.clear(), aggregates.clear()
    else:
        predictions = predictions.with_columns(pl.lit([], dtype=pl.List(ENTITY)).alias("entities"))

    manifest = write_report(DAY, predictions, aggregates, tmp_path)

    assert manifest.height == 1 + len(CHARTS) + 6
    assert "2024-05-01" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert pl.read_parquet(tmp_path / "exports" / "predictions.parquet").equals(predictions)
    json_rows = json.loads((tmp_path / "exports" / "predictions.json").read_text())
    assert len(json_rows) == predictions.height


def test_rerun_removes_stale_files_of_ours_only(
    tmp_path: Path, predictions: pl.DataFrame, aggregates: pl.DataFrame
) -> None:
    write_report(DAY, predictions, aggregates, tmp_path)
    stale = [tmp_path / "charts" / "retired_chart.png", tmp_path / "exports" / "old.csv"]
    for path in stale:
        path.write_bytes(b"stale")
    not_ours = tmp_path / "notes.txt"
    not_ours.write_text("keep me")

    manifest = write_report(DAY, predictions.head(2), aggregates, tmp_path)

    assert not any(path.exists() for path in stale)
    assert not_ours.read_text() == "keep me"
    assert pl.read_parquet(tmp_path / "exports" / "predictions.parquet").height == 2
    assert not list(tmp_path.rglob("*.tmp"))
    assert manifest.height == 1 + len(CHARTS) + 6


def test_markdown_preview(predictions: pl.DataFrame) -> None:
    png = render_charts(predictions)["label_mix"]
    preview = markdown_preview(DAY, predictions, png)

    assert "2024-05-01" in preview.splitlines()[0]
    assert "6 docs" in preview
    assert "50% positive" in preview and "33% negative" in preview
    assert "en (4)" in preview
    assert f"![label mix](data:image/png;base64,{base64.b64encode(png).decode()})" in preview


def test_markdown_preview_of_empty_day(predictions: pl.DataFrame) -> None:
    preview = markdown_preview(DAY, predictions.clear(), b"")
    assert "0 docs" in preview


def test_top_entities_count_named_things_not_numbers() -> None:
    from nlp_assets.kernels.report import entity_counts

    def ent(text: str, label: str) -> dict[str, object]:
        return {"text": text, "label": label, "start_char": 0, "end_char": len(text)}

    frame = pl.DataFrame(
        {"entities": [[ent("one", "CARDINAL"), ent("Acme", "ORG")], [ent("Acme", "ORG")]]}
    )
    counts = entity_counts(frame)
    assert counts.rows() == [("Acme", "ORG", 2)]


# --- CSV formula injection (OWASP "CSV injection") ------------------------------------------

HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_neutralised(
    tmp_path: Path, predictions: pl.DataFrame, aggregates: pl.DataFrame
) -> None:
    hostile = predictions.head(len(HOSTILE)).with_columns(
        pl.Series("source", HOSTILE),
        pl.Series("doc_id", [f"={i}" for i in range(len(HOSTILE))]),
        pl.Series("entities", [[entity(text, "ORG")] for text in HOSTILE]),
        pl.Series("sentiment_score", [-0.5] * len(HOSTILE)),  # a number stays a number
    )
    write_report(DAY, hostile, aggregates, tmp_path)
    exports = tmp_path / "exports"

    csv = pl.read_csv(exports / "predictions.csv", infer_schema=False)
    assert csv["source"].to_list() == [f"'{text}" for text in HOSTILE]
    assert csv["doc_id"].to_list() == [f"'={i}" for i in range(len(HOSTILE))]
    text_columns = [name for name, dtype in hostile.schema.items() if dtype == pl.String]
    for column in text_columns:  # no text cell of any column starts like a formula
        assert not any(cell and cell[0] in "=+-@\t\r" for cell in csv[column] if cell), column
    assert csv["sentiment_score"].to_list() == ["-0.5"] * len(HOSTILE)
    # nested values stay JSON (a JSON array never starts like a formula) and round-trip
    assert [json.loads(cell) for cell in csv["entities"]] == hostile["entities"].to_list()
    # Parquet and JSON exports keep the exact values
    assert pl.read_parquet(exports / "predictions.parquet").equals(hostile)
    records = json.loads((exports / "predictions.json").read_text(encoding="utf-8"))
    assert [r["source"] for r in records] == HOSTILE


def test_csv_leaves_ordinary_text_alone() -> None:
    from nlp_assets.kernels.report import csv_ready

    frame = pl.DataFrame({"text": ["plain", "a=b", "x-1", "'quoted", "", None, " =1"]})
    assert csv_ready(frame)["text"].to_list() == frame["text"].to_list()
