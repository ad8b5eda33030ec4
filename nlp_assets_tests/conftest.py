"""Shared fixtures: the real offline models, loaded once per test session."""

from __future__ import annotations

import pytest

from resources.models import EntityRecognizer, ModelResource, SentenceEmbedder


@pytest.fixture(scope="session")
def models() -> ModelResource:
    return ModelResource(device="cpu")


@pytest.fixture(scope="session")
def embedder(models: ModelResource) -> SentenceEmbedder:
    return models.embedder


@pytest.fixture(scope="session")
def ner(models: ModelResource) -> EntityRecognizer:
    return models.entity_recognizer
