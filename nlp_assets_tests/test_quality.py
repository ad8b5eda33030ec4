"""Quality watched every day: the figures per day and source, the shift check, the report.

Kernel tests use hand-built frames whose expected values are worked out in the comments; the
asset tests run the real `quality` asset through Dagster on a lake in a temporary folder.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from nlp_assets.definitions import defs
from nlp_assets.kernels.predict import PREDICTIONS_SCHEMA
from nlp_assets.kernels.quality import (
    BASELINE_DAYS,
    QUALITY_SCHEMA,
    SourceStats,
    Thresholds,
    centroid_limit,
    cosine_distance,
    day_stats,
    quality_figures,
    quarantine_sources,
    shift_findings,
)
from nlp_assets.kernels.report import TREND_CHART, sentiment_by_source, write_report
from nlp_assets.lake import Lake
from nlp_assets.partitions import daily_partitions
from nlp_assets.resources.lake import LakeIOManager, LakeResource
from nlp_assets.schemas import quality_schema
from nlp_assets.stages.quality import QUALITY_SHIFT_CHECK, previous_days_stats, quality

DAY = date(2026, 11, 18)
DIM = 4


def entity(text: str = "Acme", label: str = "ORG") -> dict[str, object]:
    return {"text": text, "label": label, "start_char": 0, "end_char": len(text)}


def prediction(
    doc_id: str,
    source: str,
    label: str | None,
    score: float | None = None,
    *,
    n_entities: int = 0,
    day: date = DAY,
) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(PREDICTIONS_SCHEMA)
    row |= {
        "doc_id": doc_id,
        "ingest_date": day,
        "source": source,
        "lang": "en" if label else "fr",
        "is_duplicate": False,
        "sentiment_label": label,
        "sentiment_score": score if label else None,
        "entities": [entity() for _ in range(n_entities)],
        "skipped_reason": None if label else "unsupported_language",
    }
    return row


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=PREDICTIONS_SCHEMA, orient="row")


def features(doc_ids: list[str], vectors: list[list[float]], day: date = DAY) -> pl.DataFrame:
    unit = [list(np.asarray(v, dtype=np.float32) / np.linalg.norm(v)) for v in vectors]
    dim = len(vectors[0]) if vectors else DIM
    return pl.DataFrame(
        {
            "doc_id": doc_ids,
            "ingest_date": [day] * len(doc_ids),
            "embedding": pl.Series(unit, dtype=pl.Array(pl.Float32, dim)),
        }
    )


# --------------------------------------------------------------------------------------
# Kernel: the figures of one day
# --------------------------------------------------------------------------------------


@pytest.fixture
def news_day() -> pl.DataFrame:
    """news: 3 positive (0.9, 0.8, 0.7), 1 negative (0.2), 1 skipped; 10 entities in all.
    feedback: 1 positive (0.6)."""
    return frame(
        [
            prediction("n1", "news", "positive", 0.9, n_entities=4),
            prediction("n2", "news", "positive", 0.8, n_entities=2),
            prediction("n3", "news", "positive", 0.7),
            prediction("n4", "news", "negative", 0.2, n_entities=1),
            prediction("n5", "news", None, n_entities=3),
            prediction("f1", "feedback", "positive", 0.6),
        ]
    )


def test_label_mix_mean_score_and_skipped_share_per_source(news_day: pl.DataFrame) -> None:
    figures = quality_figures(DAY, news_day, pl.DataFrame())
    assert dict(figures.schema) == QUALITY_SCHEMA
    news = figures.filter(pl.col("source") == "news").row(0, named=True)

    assert news["n_docs"] == 5 and news["n_scored"] == 4
    assert news["label_mix"] == [
        {"label": "negative", "n_docs": 1},
        {"label": "positive", "n_docs": 3},
        {"label": "skipped", "n_docs": 1},
    ]
    assert news["positive_share"] == pytest.approx(3 / 4)  # of the scored documents
    assert news["mean_sentiment_score"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.2) / 4)
    assert news["skipped_share"] == pytest.approx(1 / 5)
    assert news["entities_per_doc"] == pytest.approx(10 / 5)
    feedback = figures.filter(pl.col("source") == "feedback").row(0, named=True)
    assert (feedback["n_docs"], feedback["positive_share"], feedback["skipped_share"]) == (1, 1, 0)
    quality_schema().validate(figures)


def test_entities_per_100_tokens_counts_the_tokens_of_the_source(news_day) -> None:
    tokens = pl.DataFrame(
        {"doc_id": ["n1", "n2", "n3", "n4", "n5", "f1"], "n_tokens": [100, 100, 100, 100, 100, 40]}
    )
    figures = quality_figures(DAY, news_day, pl.DataFrame(), tokens=tokens)
    per_100 = dict(figures.select("source", "entities_per_100_tokens").iter_rows())
    assert per_100 == {"news": pytest.approx(100 * 10 / 500), "feedback": 0.0}


def test_quarantined_rows_are_counted_against_their_source(news_day) -> None:
    raw = pl.DataFrame(
        {
            "doc_id": ["n1", "n2", "n3", "n4", "n5", "f1", "gone"],
            "source": ["news"] * 5 + ["feedback", "news"],
            "file": ["d/news.jsonl"] * 5 + ["d/feedback.jsonl", "d/news.jsonl"],
        }
    )
    quarantine = pl.DataFrame(
        {
            # cleaned_text refused a document the raw stage kept: its own source
            "doc_id": ["gone", None, None, None],
            # raw_text refused records: the source of their file, else the file's default
            "file": ["d/news.jsonl", "d/news.jsonl", "d/web_feedback.jsonl", "d/bbc_1.txt"],
        }
    )
    sources = quarantine_sources(quarantine, raw)
    assert sources.to_list() == ["news", "news", "web_feedback", "text_files"]

    figures = quality_figures(DAY, news_day, pl.DataFrame(), quarantine_source=sources)
    shares = {r["source"]: r for r in figures.iter_rows(named=True)}
    assert shares["news"]["n_quarantined"] == 2
    assert shares["news"]["quarantined_share"] == pytest.approx(2 / (5 + 2))
    assert shares["feedback"]["quarantined_share"] == 0.0
    # a source with nothing but refused records still shows, with 0 documents
    assert shares["web_feedback"]["n_docs"] == 0
    assert shares["web_feedback"]["quarantined_share"] == 1.0
    quality_schema().validate(figures)


# --------------------------------------------------------------------------------------
# Kernel: the centroid distance and the baseline of previous days
# --------------------------------------------------------------------------------------


def one_source_day(vectors: list[list[float]], prefix: str, source: str = "news") -> dict:
    ids = [f"{prefix}{i}" for i in range(len(vectors))]
    preds = frame([prediction(i, source, "positive", 0.9) for i in ids])
    return day_stats(preds, features(ids, vectors))


def test_cosine_distance_of_known_vectors() -> None:
    assert cosine_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert cosine_distance(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(
        1 - 1 / math.sqrt(2)
    )
    assert cosine_distance(np.array([2.0, 0.0]), np.array([3.0, 0.0])) == pytest.approx(0.0)
    assert cosine_distance(np.array([0.0, 0.0]), np.array([1.0, 0.0])) is None


def test_centroid_distance_is_to_the_mean_of_the_previous_days_documents() -> None:
    # today: every document along x. Before: 3 documents along y, then 1 along x. Pooled over
    # the 4 documents the baseline centroid is (1, 3) / 4, so the distance is 1 - 1/sqrt(10)
    # (a mean of the two daily centroids, (0.5, 0.5), would give 1 - 1/sqrt(2)).
    history = [
        one_source_day([[0, 1, 0, 0]] * 3, "a"),
        one_source_day([[1, 0, 0, 0]], "b"),
    ]
    ids = ["t1", "t2"]
    today = frame([prediction(i, "news", "negative", 0.1) for i in ids])
    figures = quality_figures(DAY, today, features(ids, [[1, 0, 0, 0]] * 2), history=history)
    row = figures.row(0, named=True)
    assert row["centroid_distance"] == pytest.approx(1 - 1 / math.sqrt(10), abs=1e-6)
    assert row["baseline_days"] == 2 and row["baseline_docs"] == 4
    assert row["baseline_positive_share"] == 1.0  # every earlier document was positive
    assert row["positive_share"] == 0.0


def test_first_day_has_no_baseline_and_is_not_judged() -> None:
    ids = ["t1", "t2"]
    today = frame([prediction(i, "news", "positive", 0.9) for i in ids])
    figures = quality_figures(DAY, today, features(ids, [[1, 0, 0, 0]] * 2), history=[])
    row = figures.row(0, named=True)
    assert row["baseline_days"] == 0 and row["baseline_docs"] == 0
    assert row["centroid_distance"] is None
    assert row["baseline_positive_share"] is None and row["baseline_skipped_share"] is None
    verdict = shift_findings(figures, Thresholds(min_docs=1))
    assert verdict.passed and verdict.not_judged == ["news"] and not verdict.judged
    quality_schema().validate(figures)


def test_fewer_than_seven_previous_days_use_what_there_is_and_more_use_the_last_seven() -> None:
    ids = ["t1"]
    today = frame([prediction("t1", "news", "positive", 0.9)])
    today_features = features(ids, [[1, 0, 0, 0]])
    along_x = [one_source_day([[1, 0, 0, 0]], f"x{i}") for i in range(3)]
    three = quality_figures(DAY, today, today_features, history=along_x).row(0, named=True)
    assert three["baseline_days"] == 3
    assert three["centroid_distance"] == pytest.approx(0.0, abs=1e-6)

    # nine days given: the two oldest (along y) are more than seven days back and left out
    far = [one_source_day([[0, 1, 0, 0]], f"y{i}") for i in range(2)]
    recent = [one_source_day([[1, 0, 0, 0]], f"x{i}") for i in range(BASELINE_DAYS)]
    nine = quality_figures(DAY, today, today_features, history=far + recent).row(0, named=True)
    assert nine["baseline_days"] == BASELINE_DAYS
    assert nine["centroid_distance"] == pytest.approx(0.0, abs=1e-6)


def test_a_source_new_today_has_no_baseline_even_when_others_do() -> None:
    history = [one_source_day([[1, 0, 0, 0]], "a", source="news")]
    today = frame([prediction("t1", "news", "positive", 0.9), prediction("t2", "blog", "positive")])
    figures = quality_figures(
        DAY, today, features(["t1", "t2"], [[1, 0, 0, 0]] * 2), history=history
    )
    days = dict(figures.select("source", "baseline_days").iter_rows())
    assert days == {"blog": 0, "news": 1}


# --------------------------------------------------------------------------------------
# Kernel: the shift judgement
# --------------------------------------------------------------------------------------


def quality_row(**values: object) -> dict[str, object]:
    row: dict[str, object] = {
        "ingest_date": DAY,
        "source": "news",
        "n_docs": 200,
        "n_scored": 200,
        "label_mix": [],
        "positive_share": 0.5,
        "mean_sentiment_score": 0.5,
        "skipped_share": 0.0,
        "n_quarantined": 0,
        "quarantined_share": 0.0,
        "entities_per_doc": 3.0,
        "entities_per_100_tokens": 1.0,
        "baseline_days": 7,
        "baseline_docs": 1400,
        "baseline_positive_share": 0.5,
        "baseline_skipped_share": 0.0,
        "centroid_distance": 0.001,
    }
    return row | values


def rows(*dicts: dict[str, object]) -> pl.DataFrame:
    return pl.DataFrame(list(dicts), schema=QUALITY_SCHEMA, orient="row")


def test_shift_check_flags_each_figure_past_its_threshold_and_names_it() -> None:
    # 200 documents against 1,400: the centroid may move 3.2 x (1/200 + 1/1400) = 0.0183
    limits = Thresholds(
        centroid_noise_factor=3.2, positive_share_shift=0.15, skipped_share_shift=0.1
    )
    assert centroid_limit(200, 1400, 3.2) == pytest.approx(3.2 * (1 / 200 + 1 / 1400))
    stable = rows(quality_row(positive_share=0.6, centroid_distance=0.018))
    assert shift_findings(stable, limits).passed

    moved = rows(
        quality_row(source="news", centroid_distance=0.05),
        quality_row(source="reviews", positive_share=0.2),
        quality_row(source="feedback", skipped_share=0.3),
    )
    verdict = shift_findings(moved, limits)
    assert not verdict.passed
    assert verdict.judged == ["feedback", "news", "reviews"]
    assert len(verdict.findings) == 3
    assert any(f.startswith("news: embedding centroid moved 0.0500") for f in verdict.findings)
    assert any(f.startswith("reviews: positive share 20.0% vs 50.0%") for f in verdict.findings)
    assert any(f.startswith("feedback: skipped share 30.0% vs 0.0%") for f in verdict.findings)


def test_small_sources_are_reported_but_not_judged() -> None:
    small = rows(quality_row(source="feedback", n_docs=8, centroid_distance=0.5))
    verdict = shift_findings(small, Thresholds(min_docs=100))
    assert verdict.passed and verdict.not_judged == ["feedback"]


# --------------------------------------------------------------------------------------
# The asset and its check, through Dagster on a temporary lake
# --------------------------------------------------------------------------------------

SOURCES = ("news", "reviews")
DOCS = 120  # above MIN_DOCS_JUDGED, so both sources are judged


def write_day(store: Lake, day: date, *, news_direction: list[float], seed: int) -> None:
    """120 documents per source: embeddings around a fixed direction per source (small noise),
    half positive, a few entities each."""
    rng = np.random.default_rng(seed)
    directions = {"news": news_direction, "reviews": [0.0, 0.0, 1.0, 1.0]}
    preds, ids, vectors = [], [], []
    for source in SOURCES:
        for i in range(DOCS):
            doc_id = f"{day:%m%d}{source}{i:03d}"
            label = "positive" if i % 2 else "negative"
            preds.append(prediction(doc_id, source, label, 0.5, n_entities=2, day=day))
            ids.append(doc_id)
            vectors.append(list(np.asarray(directions[source]) + rng.normal(0, 0.05, DIM)))
    store.write("predictions", day.isoformat(), frame(preds))
    store.write("features", day.isoformat(), features(ids, vectors, day))


def materialise_quality(root: Path) -> dg.ExecuteInProcessResult:
    resource = LakeResource(root=str(root))
    upstream = [
        dg.AssetSpec(name, partitions_def=daily_partitions).with_io_manager_key("lake_io_manager")
        for name in ("predictions", "features")
    ]
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [quality, *upstream],
            partition_key=DAY.isoformat(),
            instance=instance,
            resources={"lake": resource, "lake_io_manager": LakeIOManager(lake=resource)},
        )


@pytest.mark.parametrize("shifted", [False, True], ids=["stable_day", "shifted_day"])
def test_shift_check_warns_on_an_injected_shift_and_passes_on_a_stable_day(
    tmp_path: Path, shifted: bool
) -> None:
    store = Lake(tmp_path / "lake")
    usual = [1.0, 1.0, 0.0, 0.0]
    for back in range(1, BASELINE_DAYS + 1):
        write_day(store, DAY - timedelta(days=back), news_direction=usual, seed=back)
    today = [1.0, -1.0, 0.0, 0.0] if shifted else usual  # news turned 90 degrees: a new topic
    write_day(store, DAY, news_direction=today, seed=99)

    result = materialise_quality(tmp_path / "lake")

    assert result.success  # the check warns, it never blocks
    [check] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == QUALITY_SHIFT_CHECK
    ]
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.passed is (not shifted)
    assert check.metadata["judged_sources"].value == "news, reviews"
    stored = store.read_day("quality", DAY.isoformat())
    distances = dict(stored.select("source", "centroid_distance").iter_rows())
    assert set(stored["baseline_days"]) == {BASELINE_DAYS}
    assert distances["reviews"] < 0.01
    if shifted:
        assert distances["news"] > 0.9  # 90 degrees: cosine distance about 1
        assert "news: embedding centroid moved" in check.description
        assert "reviews" not in check.description
    else:
        assert distances["news"] < 0.01


def test_previous_days_come_from_the_lake_and_missing_days_are_skipped(tmp_path: Path) -> None:
    store = Lake(tmp_path / "lake")
    usual = [1.0, 1.0, 0.0, 0.0]
    write_day(store, DAY - timedelta(days=BASELINE_DAYS + 1), news_direction=usual, seed=1)
    write_day(store, DAY - timedelta(days=3), news_direction=usual, seed=2)
    write_day(store, DAY - timedelta(days=1), news_direction=usual, seed=3)
    history = previous_days_stats(store, DAY)
    assert len(history) == 2  # eight days back is outside the window; the rest never landed
    assert all(stats["news"].n_docs == DOCS for stats in history)
    assert isinstance(history[0]["news"], SourceStats)


def test_quality_sits_between_predictions_and_reports_with_a_non_blocking_check() -> None:
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("quality"))
    assert node.parent_keys == {dg.AssetKey("predictions"), dg.AssetKey("features")}
    assert dg.AssetKey("quality") in graph.get(dg.AssetKey("reports")).parent_keys
    assert node.group_name == "analytics" and node.partitions_def == daily_partitions
    shift = dg.AssetCheckKey(dg.AssetKey("quality"), QUALITY_SHIFT_CHECK)
    assert shift in node.check_keys and not graph.get_check_spec(shift).blocking
    assert (
        dg.AssetKey("quality")
        in defs.resolve_job_def("daily_pipeline").asset_layer.executable_asset_keys
    )


# --------------------------------------------------------------------------------------
# The report: sentiment by source and the trend chart
# --------------------------------------------------------------------------------------


def test_sentiment_by_source_counts_each_label(news_day: pl.DataFrame) -> None:
    table = sentiment_by_source(DAY, news_day)
    news = table.filter(pl.col("source") == "news").row(0, named=True)
    assert (news["n_docs"], news["positive"], news["negative"], news["skipped"]) == (5, 3, 1, 1)
    assert news["positive_share"] == pytest.approx(0.75)


def test_report_shows_sentiment_by_source_and_the_quality_trend(
    tmp_path: Path, news_day: pl.DataFrame
) -> None:
    trend = pl.concat(
        [
            rows(
                quality_row(ingest_date=DAY - timedelta(days=back), source=source, n_docs=10 + back)
            )
            for back in range(3)
            for source in ("news", "feedback")
        ]
    )
    manifest = write_report(
        DAY, news_day, pl.DataFrame(), tmp_path, quality=trend.sort("ingest_date")
    )

    chart = tmp_path / "charts" / f"{TREND_CHART}.png"
    assert f"chart_{TREND_CHART}" in manifest["artifact"].to_list()
    assert chart.read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Sentiment by source</h2>" in page
    # news: 5 documents, 3 positive, 1 negative, 1 skipped, 75% of the scored are positive
    assert (
        '<tr><td>news</td><td class="num">5</td><td class="num">3</td><td class="num">1</td>'
        '<td class="num">1</td><td>75.0%</td><td>0.650</td></tr>'
    ) in page
    quality_section = page.split("<h2>Quality</h2>", 1)[1]
    assert 'alt="quality_trend"' in quality_section
    for source in ("feedback", "news"):  # today's figures per source
        assert f"<tr><td>{source}</td>" in quality_section


def test_report_without_quality_has_no_trend_chart(tmp_path: Path, news_day) -> None:
    manifest = write_report(DAY, news_day, pl.DataFrame(), tmp_path)
    assert f"chart_{TREND_CHART}" not in manifest["artifact"].to_list()
    assert "<h2>Quality</h2>" not in (tmp_path / "report.html").read_text(encoding="utf-8")
