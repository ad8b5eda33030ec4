"""Shared fixtures: the real offline models, loaded once per test session."""

from __future__ import annotations

import pytest

from nlp_assets_tests.kafka_broker import kafka_broker  # noqa: F401 (the `kafka` tests' broker)
from resources.models import EntityRecognizer, ModelResource, SentenceEmbedder


@pytest.fixture(scope="session", autouse=True)
def _metrics_stay_in_the_test(tmp_path_factory: pytest.TempPathFactory):
    """Stage metrics of test runs go to a temporary textfile folder, never to a developer's
    Pushgateway or data/metrics (the `metrics` tests point them at their own gateway)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PROMETHEUS_PUSHGATEWAY", raising=False)
        patch.setenv("NLP_METRICS_TEXTFILE_DIR", str(tmp_path_factory.mktemp("metrics")))
        yield


@pytest.fixture(scope="session")
def models() -> ModelResource:
    return ModelResource(device="cpu")


@pytest.fixture(scope="session")
def embedder(models: ModelResource) -> SentenceEmbedder:
    return models.embedder


@pytest.fixture(scope="session")
def ner(models: ModelResource) -> EntityRecognizer:
    return models.entity_recognizer
