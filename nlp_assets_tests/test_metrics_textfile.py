"""Without a Pushgateway, stage metrics land as node-exporter textfiles (one per group)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nlp_assets import metrics

DAY = "2026-11-18"
#: The eight daily stages.
STAGES = (
    *("raw_text", "cleaned_text", "tokens", "features"),
    *("predictions", "quality", "aggregates", "reports"),
)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    monkeypatch.setenv(metrics.TEXTFILE_DIR_ENV, str(tmp_path / "textfiles"))
    return tmp_path / "textfiles"


def _samples(path: Path) -> dict[str, tuple[dict, float]]:
    return {
        sample.name: (sample.labels, sample.value)
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
        if sample.name != metrics.MODEL_INFO
    }


def test_one_file_per_group_with_job_asset_partition_labels(folder: Path) -> None:
    where = metrics.export_stage_metrics(
        job="daily_pipeline",
        asset="predictions",
        partition=DAY,
        metadata={"docs_in": 10, "quarantined": 2, "seconds": 1.5, "device": "cpu"},
        rows_out=8,
        now=1_800_000_000.0,
    )
    path = folder / "daily_pipeline__predictions.prom"
    assert where == str(path)
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no temp file left
    samples = _samples(path)
    labels = {"job": "daily_pipeline", "asset": "predictions", "partition": DAY, "device": "cpu"}
    assert samples == {
        "nlp_stage_docs_in": (labels, 10.0),
        "nlp_stage_docs_out": (labels, 8.0),
        "nlp_stage_docs_quarantined": (labels, 2.0),
        "nlp_stage_duration_seconds": (labels, 1.5),
        metrics.LAST_SUCCESS: (labels, 1_800_000_000.0),
        metrics.PARTITION_START: (labels, 1_794_960_000.0),
    }


def test_failure_file_is_cleared_by_the_next_success(folder: Path) -> None:
    [failed] = metrics.export_stage_failure(job="j", assets=["features"], partition=DAY, now=5.0)
    assert Path(failed).name == "j__features.failed.prom"
    assert _samples(Path(failed))[metrics.FAILED][1] == 1.0
    metrics.export_stage_metrics(job="j", asset="features", partition=DAY, metadata={}, rows_out=1)
    assert sorted(p.name for p in folder.iterdir()) == ["j__features.prom"]


def test_odd_names_are_made_safe_for_file_names(folder: Path) -> None:
    metrics.export_stage_metrics(
        job="__ASSET_JOB", asset="ns/raw text", partition=None, metadata={}, rows_out=0
    )
    assert [p.name for p in folder.iterdir()] == ["__ASSET_JOB__ns_raw_text.prom"]


def test_an_unwritable_folder_warns_and_does_not_raise(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    monkeypatch.setenv(metrics.TEXTFILE_DIR_ENV, str(blocker / "sub"))
    warned: list[str] = []
    where = metrics.export_stage_metrics(
        job="j", asset="tokens", partition=DAY, metadata={}, rows_out=1, warn=warned.append
    )
    assert where is None
    assert len(warned) == 1 and warned[0].startswith(f"metrics of tokens/{DAY} not exported")


def test_metadata_values_of_dagster_types_and_bools_are_numbers() -> None:
    class Wrapped:  # the shape of dg.IntMetadataValue / FloatMetadataValue
        def __init__(self, value):
            self.value = value

    samples = metrics.stage_samples(
        {"cache_hits": Wrapped(4), "model_fallback": True, "docs_in": "12"},
        rows_out=3,
        now=0.0,
        partition="not-a-day",
    )
    values = {name: value for name, _, value, _ in samples}
    assert values == {
        "nlp_stage_cache_hits": 4.0,
        "nlp_stage_model_fallback": 1.0,
        "nlp_stage_docs_out": 3.0,
        metrics.LAST_SUCCESS: 0.0,
    }


def test_two_models_of_one_stage_are_two_info_samples(folder: Path) -> None:
    """predictions names a sentiment and an NER model: one metric, two samples."""
    where = metrics.export_stage_metrics(
        job="daily_pipeline",
        asset="predictions",
        partition=DAY,
        metadata={"sentiment_model": "head@f02da5", "ner_model": "en_core_web_sm@3.8.0"},
        rows_out=5,
    )
    assert where is not None
    info = [
        (sample.labels["role"], sample.labels["model"], sample.value)
        for family in text_string_to_metric_families(Path(where).read_text())
        for sample in family.samples
        if sample.name == metrics.MODEL_INFO
    ]
    assert sorted(info) == [
        ("ner_model", "en_core_web_sm@3.8.0", 1.0),
        ("sentiment_model", "head@f02da5", 1.0),
    ]


def _series_in(folder: Path) -> set[tuple[str, frozenset]]:
    return {
        (sample.name, frozenset(sample.labels.items()))
        for path in folder.glob("*.prom")
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def test_textfile_series_are_bounded_after_30_days_of_runs(folder: Path) -> None:
    days_of_runs(2)
    after_two, files = _series_in(folder), len(list(folder.iterdir()))
    days_of_runs(28, first=3)
    assert len(_series_in(folder)) == len(after_two)
    # one file per job and asset, and one per stage whose last run failed (here always one)
    assert len(list(folder.iterdir())) == files == len(STAGES) + 2


def test_files_of_the_per_partition_layout_are_removed_by_the_next_export(folder: Path) -> None:
    folder.mkdir(parents=True)
    old = folder / f"j__features__{DAY}.prom"
    old.write_text("nlp_stage_docs_out 1\n")
    metrics.export_stage_metrics(job="j", asset="features", partition=DAY, metadata={}, rows_out=1)
    assert sorted(p.name for p in folder.iterdir()) == ["j__features.prom"]


def days_of_runs(days: int, *, first: int = 1) -> None:
    """`days` daily runs: every stage of each day succeeds, then one stage fails (a retry's
    failure) and the Kafka sensor reports lag, as a month of production does."""
    for n in range(first, first + days):
        day = f"2026-01-{n:02d}"
        for asset in STAGES:
            metrics.export_stage_metrics(
                job="daily_pipeline",
                asset=asset,
                partition=day,
                metadata={"docs_in": n, "seconds": 1.0, "model": "m@1", "device": "cpu"},
                rows_out=n,
            )
        metrics.export_stage_failure(
            job="daily_pipeline", assets=[STAGES[n % len(STAGES)]], partition=day
        )
        metrics.export_consumer_lag(topic="nlp-documents", lag=n, asset="raw_text")
