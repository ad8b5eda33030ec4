"""The model result cache against the real Redis on 127.0.0.1:6379 (marker `redis`).

Each test uses its own key namespace and deletes its keys afterwards. A missing Redis fails
these tests (it is never skipped).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from nlp_assets.lake import Lake
from nlp_assets.resources.model_cache import CacheStats, ModelCacheResource, RedisCache
from nlp_assets.resources.models import MIN_COSINE, CachedEmbedder, InferenceStats, ModelResource
from nlp_assets_tests.model_stages import (
    DAY,
    MODEL_STEPS,
    N_DOCS,
    materialize_model_steps,
    step_metadata,
    write_model_inputs,
)

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def namespace():
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # no Redis: the test fails here, with the connection error
    name = f"nlp-test-{uuid.uuid4().hex[:12]}"
    yield name
    _delete_namespace(client, name)
    client.close()


def _delete_namespace(client: redis.Redis, name: str) -> int:
    keys = list(client.scan_iter(match=f"{name}:*", count=1_000))
    if keys:
        client.delete(*keys)
    return len(keys)


@pytest.fixture(scope="module")
def lake_with_inputs(tmp_path_factory, models: ModelResource) -> Path:
    return write_model_inputs(tmp_path_factory.mktemp("lake"), models)


def _materialize(lake_root: Path, models: ModelResource, namespace: str, url_env: str):
    cache = ModelCacheResource(url_env_var=url_env, namespace=namespace)
    return materialize_model_steps(lake_root, models, cache)


def test_second_run_of_an_unchanged_day_is_all_hits_and_spends_no_model_time(
    lake_with_inputs, models, namespace, monkeypatch
):
    monkeypatch.setenv("NLP_TEST_REDIS_URL", REDIS_URL)
    first = _materialize(lake_with_inputs, models, namespace, "NLP_TEST_REDIS_URL")
    lake = Lake(lake_with_inputs)
    before = {s: lake.read_day(s, DAY).sort("doc_id") for s in MODEL_STEPS}
    for step in MODEL_STEPS:
        meta = step_metadata(first, step)
        distinct = lake.read_day("cleaned_text", DAY)["text"].n_unique()
        assert meta["cache_hits"] + meta["cache_misses"] == N_DOCS
        assert meta["cache_misses"] >= distinct and meta["cache_errors"] == 0
        assert meta["model_seconds"] > 0
    client = redis.Redis.from_url(REDIS_URL)
    stored = list(client.scan_iter(match=f"{namespace}:*"))
    assert len(stored) >= 2 * distinct  # embeddings and entities, one key per distinct text
    assert 0 < client.ttl(stored[0]) <= 30 * 86_400  # the configured TTL is set

    second = _materialize(lake_with_inputs, models, namespace, "NLP_TEST_REDIS_URL")
    for step in MODEL_STEPS:
        meta = step_metadata(second, step)
        assert (meta["cache_hits"], meta["cache_misses"], meta["cache_errors"]) == (N_DOCS, 0, 0)
        assert meta["model_seconds"] == 0
        after = lake.read_day(step, DAY).sort("doc_id")
        assert after.equals(before[step])  # the cached results are the computed ones


def test_unreachable_redis_runs_uncached_and_warns_once(
    lake_with_inputs, models, namespace, monkeypatch
):
    monkeypatch.setenv("NLP_TEST_REDIS_URL", "redis://:do-not-log-me@127.0.0.1:1/0")
    result = _materialize(lake_with_inputs, models, namespace, "NLP_TEST_REDIS_URL")
    assert result.success
    for step in MODEL_STEPS:
        meta = step_metadata(result, step)
        assert meta["cache_hits"] == 0 and meta["cache_misses"] == N_DOCS
        assert meta["cache_errors"] >= 1 and meta["model_seconds"] > 0
        assert Lake(lake_with_inputs).read_day(step, DAY).height == N_DOCS
    uncached = [m for m in result.logs if "running uncached" in m]
    assert len(uncached) == len(MODEL_STEPS)  # once per step, not once per batch
    assert all("do-not-log-me" not in m for m in result.logs)


def test_a_password_protected_redis_works_and_a_wrong_password_never_reaches_the_log(
    lake_with_inputs, models, namespace, monkeypatch
):
    admin = redis.Redis.from_url(REDIS_URL)
    user, password = f"{namespace}-user", uuid.uuid4().hex
    admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=[f"{namespace}:*"],
        commands=["+get", "+mget", "+set", "+ping", "+hello", "+client", "+auth"],
    )
    try:
        monkeypatch.setenv("NLP_TEST_REDIS_URL", f"redis://{user}@127.0.0.1:6379/0")
        monkeypatch.setenv("REDIS_PASSWORD", password)
        ok = _materialize(lake_with_inputs, models, namespace, "NLP_TEST_REDIS_URL")
        assert step_metadata(ok, "features")["cache_errors"] == 0
        assert step_metadata(ok, "features")["cache_misses"] == N_DOCS

        monkeypatch.setenv("REDIS_PASSWORD", "wrong-" + password)
        bad = _materialize(lake_with_inputs, models, namespace, "NLP_TEST_REDIS_URL")
        assert bad.success and step_metadata(bad, "features")["cache_errors"] >= 1
        assert any("running uncached" in m for m in bad.logs)
        for result in (ok, bad):
            assert all(password not in m for m in result.logs)
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_flush_and_dropped_connection_mid_run_still_give_correct_results(models, namespace):
    """Redis evicting everything (or restarting) while the model computes: the results are
    the model's, the next batch repopulates the cache."""
    embedder = models.embedder
    texts = [f"Document number {i} talks about trains in Berlin." for i in range(12)]
    token_ids = embedder.tokenize(texts)
    expected = embedder.embed_token_ids(token_ids)
    backend = RedisCache(REDIS_URL, ttl_seconds=600)
    admin = redis.Redis.from_url(REDIS_URL)

    stats = CacheStats()
    cached = CachedEmbedder(embedder, texts[:6], backend, namespace, stats, InferenceStats())
    cached.embed_token_ids(token_ids[:6])
    assert stats.misses == 6

    class FlushingEmbedder:  # the model call during which Redis loses everything
        name, version, dim = embedder.name, embedder.version, embedder.dim
        cache_version = embedder.cache_version

        def embed_token_ids(self, ids, stats=None):
            assert _delete_namespace(admin, namespace) == 6
            my_id = backend.client.client_id()
            admin.client_kill_filter(_id=my_id)  # our connection drops, as on a restart
            return embedder.embed_token_ids(ids, stats)

    stats = CacheStats()
    flushing = CachedEmbedder(
        FlushingEmbedder(), texts, backend, namespace, stats, InferenceStats()
    )
    out = flushing.embed_token_ids(token_ids)
    assert stats.hits == 6 and stats.misses == 6  # hits read before the flush
    assert np.sum(out * expected, axis=1).min() >= MIN_COSINE  # bf16: batch shape matters
    stats = CacheStats()
    again = CachedEmbedder(embedder, texts, backend, namespace, stats, InferenceStats())
    np.testing.assert_array_equal(again.embed_token_ids(token_ids), out)  # as computed
    # the six computed after the flush were written back on a new connection
    assert (stats.hits, stats.misses, stats.errors) == (6, 6, 0)
    admin.close()


def test_a_corrupted_value_in_redis_is_recomputed_and_counted_never_served(
    lake_with_inputs, models, namespace, monkeypatch
):
    """Values written into Redis by someone else (a bug, another version, a person): the
    step validates each value it reads, recomputes what fails and says so in `cache_invalid`."""
    monkeypatch.setenv("NLP_TEST_REDIS_URL", REDIS_URL)
    _materialize(lake_with_inputs, models, namespace, "NLP_TEST_REDIS_URL")
    lake = Lake(lake_with_inputs)
    before = {s: lake.read_day(s, DAY).sort("doc_id") for s in MODEL_STEPS}
    client = redis.Redis.from_url(REDIS_URL)
    embedder, ner = models.embedder, models.entity_recognizer
    vector_keys = sorted(client.scan_iter(match=f"{namespace}:{embedder.name}:*"))
    entity_keys = sorted(client.scan_iter(match=f"{namespace}:{ner.name}:*"))
    assert len(vector_keys) >= 2 and entity_keys
    client.set(vector_keys[0], np.full(embedder.dim, np.nan, dtype="<f4").tobytes())
    client.set(vector_keys[1], b"not a vector")
    client.set(entity_keys[0], b'{"text": "not a list of entities"}')

    result = _materialize(lake_with_inputs, models, namespace, "NLP_TEST_REDIS_URL")

    assert result.success
    features, predictions = (step_metadata(result, s) for s in MODEL_STEPS)
    assert features["cache_invalid"] == 2 and predictions["cache_invalid"] == 1
    for meta in (features, predictions):
        assert meta["cache_hits"] + meta["cache_misses"] == N_DOCS
        assert meta["cache_misses"] >= meta["cache_invalid"] and meta["cache_errors"] == 0
    assert any("failed validation" in m for m in result.logs)
    after = {s: lake.read_day(s, DAY).sort("doc_id") for s in MODEL_STEPS}
    cosine = np.sum(
        after["features"]["embedding"].to_numpy() * before["features"]["embedding"].to_numpy(),
        axis=1,
    )
    assert np.isfinite(cosine).all() and cosine.min() >= MIN_COSINE
    assert after["predictions"]["entities"].equals(before["predictions"]["entities"])
    # the recomputed values replaced the corrupted ones
    repaired = np.frombuffer(client.get(vector_keys[0]), dtype="<f4")
    assert np.isfinite(repaired).all() and abs(np.linalg.norm(repaired) - 1) < 1e-3
    assert isinstance(json.loads(client.get(entity_keys[0])), list)
    client.close()


def test_a_max_length_change_misses_the_embedding_cache(tmp_path, models, namespace, monkeypatch):
    monkeypatch.setenv("NLP_TEST_REDIS_URL", REDIS_URL)
    lake_root = write_model_inputs(tmp_path, models)
    _materialize(lake_root, models, namespace, "NLP_TEST_REDIS_URL")

    shorter = ModelResource(device="cpu", max_length=64)
    result = _materialize(lake_root, shorter, namespace, "NLP_TEST_REDIS_URL")

    tokens = Lake(lake_root).read_day("tokens", DAY)
    assert tokens["truncated"].any()  # some documents really read fewer tokens now
    features, predictions = (step_metadata(result, s) for s in MODEL_STEPS)
    assert (features["cache_hits"], features["cache_misses"]) == (0, N_DOCS)
    assert features["cache_invalid"] == 0
    assert predictions["cache_hits"] == N_DOCS  # entities do not depend on the embedder
