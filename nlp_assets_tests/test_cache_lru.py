"""The model result cache's own logic: keys, codecs, LRU, degradation (no service needed)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from nlp_assets.resources.model_cache import (
    CacheStats,
    LruCache,
    ModelCacheResource,
    PostgresCache,
    RedisCache,
    TieredCache,
    cache_key,
    cached_compute,
    decode_json,
    encode_json,
    entities_codec,
    probabilities_codec,
    text_key,
    vector_codec,
)
from nlp_assets.resources.models import MIN_COSINE, CachedEmbedder, InferenceStats
from nlp_assets.resources.warehouse import redact_url


class Broken:
    description = "broken backend"

    def __init__(self):
        self.calls = 0

    def get_many(self, keys):
        self.calls += 1
        raise ConnectionError("redis://user:s3cret@cache:6379 refused")

    def set_many(self, items):
        self.calls += 1
        raise ConnectionError("redis://user:s3cret@cache:6379 refused")


def _compute_upper(texts, calls):
    def compute(indices):
        calls.append([texts[i] for i in indices])
        return [texts[i].upper() for i in indices]

    return compute


def _run(texts, cache, stats, calls, warn=None, version="v1"):
    return cached_compute(
        texts,
        _compute_upper(texts, calls),
        cache=cache,
        namespace="t",
        model="m",
        version=version,
        encode=str.encode,
        decode=bytes.decode,
        stats=stats,
        warn=warn,
    )


def test_second_pass_is_all_hits_and_computes_nothing():
    cache, calls = LruCache(1 << 20), []
    texts = ["a", "b", "a", "c"]
    first, second = CacheStats(), CacheStats()
    assert _run(texts, cache, first, calls) == ["A", "B", "A", "C"]
    assert calls == [["a", "b", "c"]]  # a repeated text is computed once
    assert (first.hits, first.misses) == (0, 4)
    assert _run(texts, cache, second, calls) == ["A", "B", "A", "C"]
    assert len(calls) == 1 and (second.hits, second.misses, second.errors) == (4, 0, 0)
    assert second.model_seconds == 0


def test_a_new_model_version_does_not_read_the_old_results():
    cache, calls = LruCache(1 << 20), []
    _run(["a"], cache, CacheStats(), calls, version="v1")
    stats = CacheStats()
    _run(["a"], cache, stats, calls, version="v2")
    assert stats.misses == 1 and len(calls) == 2


def test_failing_backend_computes_everything_warns_once_and_hides_the_password():
    warnings, calls, stats = [], [], CacheStats()
    backend = Broken()
    assert _run(["x", "y"], backend, stats, calls, warn=warnings.append) == ["X", "Y"]
    assert _run(["z"], backend, stats, calls, warn=warnings.append) == ["Z"]
    assert (stats.hits, stats.misses) == (0, 3)
    assert stats.errors == 4  # two reads and two writes failed
    assert len(warnings) == 1 and "running uncached" in warnings[0]
    assert "s3cret" not in warnings[0] and "***@cache:6379" in warnings[0]


def test_undecodable_value_is_a_miss_and_is_recomputed():
    cache, stats = LruCache(1 << 20), CacheStats()
    encode, decode = vector_codec(3)
    key = cache_key("t", "m", "v", text_key("a"))
    cache.set_many({key: b"short"})
    out = cached_compute(
        ["a"],
        lambda idx: [np.ones(3, dtype=np.float32)],
        cache=cache,
        namespace="t",
        model="m",
        version="v",
        encode=encode,
        decode=decode,
        stats=stats,
    )
    assert stats.misses == 1 and out[0].tolist() == [1.0, 1.0, 1.0]
    assert len(cache.get_many([key])[0]) == 12  # the good value replaced the bad one


def test_codecs_round_trip_as_plain_bytes():
    encode, decode = vector_codec(4)
    vector = np.array([0.5, -1.0, 3.25, 1e-8], dtype=np.float32)
    raw = encode(vector)
    assert raw == vector.astype("<f4").tobytes() and np.array_equal(decode(raw), vector)
    entities = [{"text": "Zürich", "label": "GPE", "start_char": 0, "end_char": 6}]
    assert decode_json(encode_json(entities)) == entities


def test_lru_evicts_the_least_recently_used_under_its_byte_budget():
    cache = LruCache(max_bytes=25)  # an entry counts key + value: 10 bytes
    cache.set_many({"k1": b"x" * 8, "k2": b"x" * 8})
    cache.get_many(["k1"])  # k1 is now the most recent
    cache.set_many({"k3": b"x" * 8})
    assert cache.get_many(["k1", "k2", "k3"]) == [b"x" * 8, None, b"x" * 8]
    assert len(cache) == 2


def test_lru_ttl_expires_entries(monkeypatch: pytest.MonkeyPatch):
    now = [1000.0]
    monkeypatch.setattr("nlp_assets.resources.model_cache.time.monotonic", lambda: now[0])
    cache = LruCache(1 << 20, ttl_seconds=10)
    cache.set_many({"k": b"v"})
    now[0] += 9
    assert cache.get_many(["k"]) == [b"v"]
    now[0] += 2
    assert cache.get_many(["k"]) == [None]


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("redis://:pw@host:6379/2", "redis://***@host:6379/2"),
        ("rediss://user:pw@host:6380/0", "rediss://***@host:6380/0"),
        ("redis://host:6379/1", "redis://host:6379/1"),
    ],
)
def test_redact_url(url: str, safe: str):
    assert redact_url(url) == safe


def test_resource_reads_url_and_password_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NLP_TEST_REDIS_URL", "rediss://cache.example:6380/3")
    monkeypatch.setenv("NLP_TEST_REDIS_PASSWORD", "pw-from-env")
    resource = ModelCacheResource(
        url_env_var="NLP_TEST_REDIS_URL",
        password_env_var="NLP_TEST_REDIS_PASSWORD",
        ssl_ca_certs="/etc/ssl/certs/ca-certificates.crt",
    )
    backend = resource.backend()
    assert isinstance(backend, RedisCache)
    kwargs = backend.client.connection_pool.connection_kwargs
    assert kwargs["password"] == "pw-from-env" and kwargs["db"] == 3
    assert kwargs["ssl_ca_certs"] == "/etc/ssl/certs/ca-certificates.crt"
    assert backend.client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert "pw-from-env" not in backend.description
    # the resource's config (what Dagster shows and logs) holds names, not secrets
    assert "pw-from-env" not in resource.model_dump_json()


def test_without_a_url_the_resource_uses_one_lru_per_process(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NLP_TEST_NO_URL", raising=False)
    resource = ModelCacheResource(url_env_var="NLP_TEST_NO_URL")
    assert isinstance(resource.backend(), LruCache)
    assert resource.backend() is ModelCacheResource(url_env_var="NLP_TEST_NO_URL").backend()
    assert ModelCacheResource(enabled=False).backend() is None


# -- levels: L1/L2 in front of L3 ----------------------------------------------------------


class LowerLevel(LruCache):
    """An in-process stand-in for L3 (the Postgres level's own tests: test_cache_postgres.py)."""

    level = 3


def test_a_lower_level_hit_is_served_without_the_model_and_fills_the_level_above():
    lower, calls = LowerLevel(1 << 20), []
    _run(["a", "b"], TieredCache([LruCache(1 << 20), lower]), CacheStats(), calls)
    fresh_upper = LruCache(1 << 20)  # L2 flushed (or a Redis restart)
    stats = CacheStats()
    assert _run(["a", "b", "a"], TieredCache([fresh_upper, lower]), stats, calls) == ["A", "B", "A"]
    assert len(calls) == 1 and stats.model_seconds == 0
    assert (stats.hits, stats.misses) == (3, 0) and stats.level_hits == {3: 3}
    assert stats.metadata()["cache_hits_l3"] == 3 and stats.metadata()["cache_hits_l1"] == 0
    assert len(fresh_upper) == 2  # filled from L3
    stats = CacheStats()
    _run(["a", "b"], TieredCache([fresh_upper, lower]), stats, calls)
    assert stats.level_hits == {1: 2}


def test_an_invalid_upper_value_is_read_from_the_level_below_and_overwritten():
    upper, lower, calls = LruCache(1 << 20), LowerLevel(1 << 20), []
    encode, decode = vector_codec(3)
    key = cache_key("t", "m", "v", text_key("a"))
    upper.set_many({key: b"short"})
    lower.set_many({key: encode(UNIT)})
    stats = CacheStats()
    out = cached_compute(
        ["a"],
        lambda idx: calls.append(idx) or [UNIT],
        cache=TieredCache([upper, lower]),
        namespace="t",
        model="m",
        version="v",
        encode=encode,
        decode=decode,
        stats=stats,
    )
    assert calls == [] and out[0].tolist() == UNIT.tolist()
    assert (stats.invalid, stats.hits, stats.level_hits) == (1, 1, {3: 1})
    assert upper.get_many([key]) == [encode(UNIT)]


def test_a_failing_lower_level_keeps_the_upper_hits_and_warns_once():
    upper, broken, calls, warnings = LruCache(1 << 20), Broken(), [], []
    _run(["a"], upper, CacheStats(), calls)
    stats = CacheStats()
    out = _run(["a", "b"], TieredCache([upper, broken]), stats, calls, warn=warnings.append)
    assert out == ["A", "B"] and calls[-1] == ["b"]  # only the one L1 missed was computed
    assert (stats.hits, stats.misses, stats.level_hits) == (1, 1, {1: 1})
    assert stats.errors == 2 and len(warnings) == 1  # its read and its write
    assert upper.get_many([cache_key("t", "m", "v1", text_key("b"))]) == [b"B"]


def test_a_database_url_in_the_environment_adds_postgres_as_l3(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NLP_TEST_NO_URL", raising=False)
    monkeypatch.setenv("NLP_TEST_CACHE_DB", "postgresql://nlp:pw-from-env@db.example:5432/cache")
    resource = ModelCacheResource(
        url_env_var="NLP_TEST_NO_URL", database_url_env_var="NLP_TEST_CACHE_DB"
    )
    backend = resource.backend()  # nothing connects until the first lookup
    assert isinstance(backend, TieredCache)
    assert [type(level) for level in backend.levels] == [LruCache, PostgresCache]
    assert "pw-from-env" not in backend.description and "nlp:***@db.example" in backend.description
    assert "pw-from-env" not in resource.model_dump_json()
    assert resource.worker_config()["database_url"].endswith("@db.example:5432/cache")
    monkeypatch.delenv("NLP_TEST_CACHE_DB")
    assert isinstance(resource.backend(), LruCache)  # unset: no L3


# -- validation on read: a corrupted or foreign value is a counted miss, never a crash -------


def _entity(text: str = "Berlin", label: str = "GPE") -> dict:
    return {"text": text, "label": label, "start_char": 0, "end_char": len(text)}


UNIT = np.array([0.6, 0.8, 0.0], dtype=np.float32)

CORRUPT_VECTORS = {
    "too short": b"short",
    "NaN": np.array([np.nan, 1, 0], dtype="<f4").tobytes(),
    "infinite": np.array([np.inf, 0, 0], dtype="<f4").tobytes(),
    "not unit length": np.array([3.0, 4.0, 0.0], dtype="<f4").tobytes(),
}
CORRUPT_ENTITIES = {
    "not JSON": b"\x80not json",
    "a JSON string": b'"garbage"',
    "an object, not a list": b'{"text": "Berlin"}',
    "a list of strings": b'["Berlin"]',
    "a missing key": b'[{"text": "Berlin", "label": "GPE", "start_char": 0}]',
    "a text that is a number": b'[{"text": 1, "label": "GPE", "start_char": 0, "end_char": 6}]',
    "an end before the start": b'[{"text": "B", "label": "GPE", "start_char": 5, "end_char": 2}]',
    "a boolean offset": b'[{"text": "B", "label": "GPE", "start_char": true, "end_char": 2}]',
}
CORRUPT_PROBABILITIES = {
    "one class of two": b"[1.0]",
    "a string": b'[0.5, "x"]',
    "NaN": b"[NaN, 0.5]",
    "out of range": b"[1.5, -0.5]",
    "not summing to one": b"[0.2, 0.2]",
    "nested": b"[[0.5, 0.5]]",
}


def _cases():
    vec_encode, vec_decode = vector_codec(3, unit_norm=True)
    ent_encode, ent_decode = entities_codec()
    pro_encode, pro_decode = probabilities_codec(2)
    for name, raw in CORRUPT_VECTORS.items():
        yield pytest.param(raw, vec_encode, vec_decode, UNIT, id=f"vector: {name}")
    for name, raw in CORRUPT_ENTITIES.items():
        yield pytest.param(raw, ent_encode, ent_decode, [_entity()], id=f"entities: {name}")
    for name, raw in CORRUPT_PROBABILITIES.items():
        yield pytest.param(raw, pro_encode, pro_decode, [0.25, 0.75], id=f"proba: {name}")


@pytest.mark.parametrize(("corrupt", "encode", "decode", "good"), list(_cases()))
def test_a_corrupted_cached_value_is_a_counted_miss_recomputed_and_replaced(
    corrupt, encode, decode, good
):
    cache, stats, warnings, calls = LruCache(1 << 20), CacheStats(), [], []
    key = cache_key("t", "m", "v", text_key("a"))
    cache.set_many({key: corrupt})

    def compute(indices):
        calls.append(indices)
        return [good for _ in indices]

    out = cached_compute(
        ["a", "b", "a"],
        compute,
        cache=cache,
        namespace="t",
        model="m",
        version="v",
        encode=encode,
        decode=decode,
        stats=stats,
        warn=warnings.append,
    )
    assert [np.asarray(v).tolist() for v in out] == [np.asarray(good).tolist()] * 3
    assert calls == [[0, 1]]  # the corrupted text was recomputed (once), with the other miss
    assert (stats.hits, stats.misses, stats.invalid, stats.errors) == (0, 3, 1, 0)
    assert stats.metadata()["cache_invalid"] == 1
    assert len(warnings) == 1 and "failed validation" in warnings[0]
    assert cache.get_many([key]) == [encode(good)]  # the good value replaced the bad one
    again = CacheStats()
    cached_compute(
        ["a"],
        compute,
        cache=cache,
        namespace="t",
        model="m",
        version="v",
        encode=encode,
        decode=decode,
        stats=again,
    )
    assert (again.hits, again.invalid) == (1, 0)


@pytest.mark.parametrize(
    ("encode", "decode", "value"),
    [
        (*vector_codec(3, unit_norm=True), UNIT),
        (*entities_codec(), [_entity("Zürich"), _entity("Acme Corp", "ORG")]),
        (*entities_codec(), []),
        (*probabilities_codec(2), [0.25, 0.75]),
    ],
)
def test_valid_values_round_trip_through_the_validating_codecs(encode, decode, value):
    assert np.asarray(decode(encode(value))).tolist() == np.asarray(value).tolist()


def test_an_embedder_with_another_max_length_misses_instead_of_serving_cut_vectors(embedder):
    """The max_length a vector was computed with is part of its key: after a config change
    no stale (differently truncated) vector is served."""
    texts = ["The battery lasts two days. " * 20, "Short review."]
    cache = LruCache(1 << 20)
    first = CacheStats()
    CachedEmbedder(embedder, texts, cache, "t", first, InferenceStats()).embed_token_ids(
        embedder.tokenize(texts)
    )
    short = copy.copy(embedder)  # same weights and dtype, fewer positions read
    short.max_length = 32
    second = CacheStats()
    out = CachedEmbedder(short, texts, cache, "t", second, InferenceStats()).embed_token_ids(
        short.tokenize(texts)
    )
    assert (first.misses, second.hits, second.misses) == (2, 0, 2)
    expected = short.embed_texts(texts)
    assert np.sum(out * expected, axis=1).min() >= MIN_COSINE
    full = embedder.embed_texts(texts[:1])[0]
    assert float(out[0] @ full) < 0.999  # really a different vector for the long text
