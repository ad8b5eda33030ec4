"""Shared fixtures: the real offline models, loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from nlp_assets.resources.models import EntityRecognizer, ModelResource, SentenceEmbedder
from nlp_assets_tests.kafka_broker import kafka_broker  # noqa: F401 (the `kafka` tests' broker)
from nlp_assets_tests.s3_server import s3_lake, s3_server  # noqa: F401 (the `s3` tests' S3)
from nlp_assets_tests.spark_cluster import (  # noqa: F401 (the `spark` tests' engines)
    connect_master,
    spark_master,
    standalone_master,
)

#: Rows per (domain, label) the shared sentiment head trains on: about a fifth of the labelled set,
#: enough for its held-out accuracy check (see `trained_sentiment_head`).
HEAD_ROWS_PER_CLASS = 250

# Property tests: CI runs a bounded number of examples, with no example database (kept out of
# git and of CI); locally hypothesis keeps its defaults and its .hypothesis/ folder.
settings.register_profile("ci", max_examples=50, deadline=None, database=None)
if os.getenv("CI") or os.getenv("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci"))


#: The longest test modules, longest first (docs/tests.md "Where the time goes"). `make test` runs
#: pytest-xdist with `--dist loadfile --no-loadscope-reorder`: a module goes whole to the next free
#: worker in collection order, so starting these first keeps one long module from being the tail.
#: A scheduling hint only: a module missing here still runs, after these.
LONGEST_FIRST = (
    "test_spark_parity.py",
    "test_chaos_streaming.py",
    "test_browser_ui.py",
    "test_spark_backfill.py",
    "test_kafka_pipeline.py",
    "test_models_tolerance.py",
    "test_end_to_end.py",
    "test_lake_day_lock.py",
    "test_models_finetune.py",
    "test_tracing_pipeline.py",
    "test_model_server.py",
    "test_spark_connect.py",
    "test_cache_redis.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within kept


@pytest.fixture(scope="session", autouse=True)
def _metrics_stay_in_the_test(tmp_path_factory: pytest.TempPathFactory):
    """Stage metrics of test runs go to a temporary textfile folder, never to a developer's
    Pushgateway or data/metrics (the `metrics` tests point them at their own gateway)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PROMETHEUS_PUSHGATEWAY", raising=False)
        patch.setenv("NLP_METRICS_TEXTFILE_DIR", str(tmp_path_factory.mktemp("metrics")))
        yield


@pytest.fixture
def otlp_receiver():
    """An OTLP/gRPC trace receiver on a free port (`dev/otlp_receiver.py`): point a process at
    its `endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`) and read the spans back (the `trace` tests)."""
    from dev.otlp_receiver import OtlpReceiver

    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def models() -> ModelResource:
    return ModelResource(device="cpu")


@pytest.fixture(scope="session")
def trained_sentiment_head(tmp_path_factory: pytest.TempPathFactory, models: ModelResource) -> Path:
    """The real sentiment head (`sentiment_model`, its blocking accuracy check included),
    trained once per session on a stratified share of the labelled set, as a Delta table that
    a test copies into its own lake (`shutil.copytree` to `<lake>/sentiment_model`)."""
    import dagster as dg
    import polars as pl

    from nlp_assets import settings as nlp_settings
    from nlp_assets.definitions import all_assets, build_resources
    from nlp_assets.stages.sentiment_model import SentimentTrainingConfig

    root = tmp_path_factory.mktemp("trained_head")
    labelled = pl.read_parquet(nlp_settings.labelled_sentiment_path())
    share = root / "labelled.parquet"
    labelled.filter(
        pl.int_range(pl.len()).shuffle(seed=0).over("domain", "label") < HEAD_ROWS_PER_CLASS
    ).write_parquet(share)
    resources = {**build_resources(lake_dir=str(root / "lake")), "models": models}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            all_assets,
            selection=["sentiment_model"],
            instance=instance,
            resources=resources,
            run_config=dg.RunConfig(
                {"sentiment_model": SentimentTrainingConfig(labelled_path=str(share))}
            ),
        )
    assert result.success
    return root / "lake" / "sentiment_model"


@pytest.fixture(scope="session")
def embedder(models: ModelResource) -> SentenceEmbedder:
    return models.embedder


@pytest.fixture(scope="session")
def ner(models: ModelResource) -> EntityRecognizer:
    return models.entity_recognizer
