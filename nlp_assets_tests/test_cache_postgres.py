"""The result cache's third level (L3, Postgres) behind Redis, against the real services
(markers `postgres`, `redis`): each test has a database of its own and a Redis key namespace of
its own. A missing service fails these tests (they are never skipped)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg2
import pytest
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from nlp_assets.lake import Lake
from nlp_assets.resources.model_cache import (
    CacheStats,
    LruCache,
    ModelCacheResource,
    PostgresCache,
    RedisCache,
    TieredCache,
    cache_key,
    cached_compute,
    encode_json,
    entities_codec,
    text_key,
    vector_codec,
)
from nlp_assets.resources.models import ModelResource
from nlp_assets_tests.model_stages import (
    DAY,
    MODEL_STEPS,
    N_DOCS,
    materialize_model_steps,
    step_metadata,
    write_model_inputs,
)
from nlp_assets_tests.postgres_db import admin_connection, temp_database, url_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"
DIM = 8
TEXTS = [f"text number {i}" for i in range(20)]


@pytest.fixture
def database() -> Iterator[str]:
    with temp_database("nlp_cache_l3") as name:
        yield name


@pytest.fixture
def namespace() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # no Redis: the test fails here, with the connection error
    name = f"nlp-test-{uuid.uuid4().hex[:12]}"
    yield name
    _flush_namespace(name)
    client.close()


def _flush_namespace(name: str) -> int:
    """What FLUSHDB does to this test's keys (the Redis is shared with other tests)."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*", count=1_000))
    if keys:
        client.delete(*keys)
    client.close()
    return len(keys)


def _vector(text: str) -> np.ndarray:
    """A deterministic unit vector per text: what the counting model double returns."""
    rng = np.random.default_rng(int.from_bytes(text.encode()[-4:], "little"))
    vector = rng.normal(size=DIM).astype("<f4")
    return vector / np.linalg.norm(vector)


class CountingModel:
    """A model double that counts the texts it is asked to compute; `during` runs inside the
    model call (a fault injected mid-run)."""

    def __init__(self, during=None):
        self.computed: list[str] = []
        self.during = during

    def compute(self, texts):
        def run(indices):
            if self.during is not None:
                self.during()
            self.computed.extend(texts[i] for i in indices)
            return [_vector(texts[i]) for i in indices]

        return run


def _embed(cache, model: CountingModel, namespace: str, texts=TEXTS):
    stats, warnings = CacheStats(), []
    encode, decode = vector_codec(DIM, unit_norm=True)
    out = cached_compute(
        texts,
        model.compute(texts),
        cache=cache,
        namespace=namespace,
        model="double",
        version="v1",
        encode=encode,
        decode=decode,
        stats=stats,
        warn=warnings.append,
    )
    return out, stats, warnings


def _rows(url: str, sql: str, params=()) -> list[tuple]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def test_a_result_flushed_from_redis_is_served_from_postgres_and_refills_redis(database, namespace):
    url = url_for(database)
    cache = TieredCache([RedisCache(REDIS_URL, ttl_seconds=600), PostgresCache(url)])
    model = CountingModel()
    first, stats, _ = _embed(cache, model, namespace)
    assert len(model.computed) == len(TEXTS) and stats.level_hits == {}
    assert _rows(url, "SELECT count(*) FROM nlp_cache.model_results")[0][0] == len(TEXTS)
    assert _flush_namespace(namespace) == len(TEXTS)

    again, stats, warnings = _embed(cache, model, namespace)
    assert len(model.computed) == len(TEXTS)  # no model call: every result came from L3
    assert (stats.hits, stats.misses, stats.errors, stats.invalid) == (len(TEXTS), 0, 0, 0)
    assert stats.level_hits == {3: len(TEXTS)} and stats.model_seconds == 0 and not warnings
    np.testing.assert_array_equal(np.vstack(again), np.vstack(first))

    _, stats, _ = _embed(cache, model, namespace)  # the L3 hits were written back to Redis
    assert stats.level_hits == {2: len(TEXTS)} and len(model.computed) == len(TEXTS)


@pytest.fixture(scope="module")
def lake_with_inputs(tmp_path_factory, models: ModelResource) -> Path:
    return write_model_inputs(tmp_path_factory.mktemp("lake"), models)


def _materialize(lake_root: Path, models: ModelResource, namespace: str):
    cache = ModelCacheResource(
        url_env_var="NLP_TEST_REDIS_URL",
        database_url_env_var="NLP_TEST_CACHE_DATABASE_URL",
        namespace=namespace,
    )
    return materialize_model_steps(lake_root, models, cache)


def test_a_day_rematerialised_after_a_redis_flush_reads_everything_from_l3(
    lake_with_inputs, models, database, namespace, monkeypatch
):
    monkeypatch.setenv("NLP_TEST_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("NLP_TEST_CACHE_DATABASE_URL", url_for(database))
    first = _materialize(lake_with_inputs, models, namespace)
    lake = Lake(lake_with_inputs)
    before = {s: lake.read_day(s, DAY).sort("doc_id") for s in MODEL_STEPS}
    assert all(step_metadata(first, s)["model_seconds"] > 0 for s in MODEL_STEPS)
    assert _flush_namespace(namespace) > 0

    second = _materialize(lake_with_inputs, models, namespace)
    for step in MODEL_STEPS:
        meta = step_metadata(second, step)
        assert (meta["cache_hits"], meta["cache_misses"], meta["cache_errors"]) == (N_DOCS, 0, 0)
        assert (meta["cache_hits_l1"], meta["cache_hits_l2"], meta["cache_hits_l3"]) == (
            0,
            0,
            N_DOCS,
        )
        assert meta["model_seconds"] == 0
        assert lake.read_day(step, DAY).sort("doc_id").equals(before[step])


def _hostile_vectors() -> st.SearchStrategy[bytes]:
    """Bytes that must never be served as a unit vector of DIM floats: any bytes, NaN and
    infinities at the right length, vectors far from unit norm."""
    floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
    return st.one_of(
        st.binary(max_size=4 * DIM + 8),
        st.lists(floats, min_size=DIM, max_size=DIM).map(
            lambda v: np.asarray(v, dtype="<f4").tobytes()
        ),
        st.floats(0, 100).map(lambda scale: (np.full(DIM, scale, dtype="<f4")).tobytes()),
    )


def _hostile_json() -> st.SearchStrategy[bytes]:
    value = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=8,
    )
    return st.one_of(
        st.binary(max_size=64),
        value.map(lambda v: json.dumps(v).encode()),
        st.just(b'[{"text": "Berlin", "label": "GPE", "start_char": NaN, "end_char": 6}]'),
    )


def _refused(decode, raw: bytes) -> bool:
    try:
        decode(raw)
    except Exception:
        return True
    return False


#: One L3 per test database for the property test's examples (one connection, not one each).
_L3: dict[str, PostgresCache] = {}


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vector=_hostile_vectors(), entities=_hostile_json())
def test_a_corrupted_l3_row_is_never_served_counted_invalid_and_overwritten(
    database, vector, entities
):
    """A row changed in Postgres by someone else: validated like a Redis value, recomputed,
    and the row repaired. The level above is an empty LRU, so every read reaches L3."""
    assume(_refused(vector_codec(DIM, unit_norm=True)[1], vector))
    assume(_refused(entities_codec()[1], entities))
    url, namespace, text = url_for(database), uuid.uuid4().hex[:12], "Anna lives in Berlin."
    right_entities = [{"text": "Berlin", "label": "GPE", "start_char": 14, "end_char": 20}]
    if url not in _L3:
        _L3[url] = PostgresCache(url)
    l3 = _L3[url]
    cases = [
        ("embedder", vector, _vector(text).tobytes(), vector_codec(DIM, unit_norm=True)),
        ("ner", entities, encode_json(right_entities), entities_codec()),
    ]
    for model, hostile, right, (encode, decode) in cases:
        key = cache_key(namespace, model, "v1", text_key(text))
        l3.set_many({key: hostile})  # as if written by a bug or a person
        stats, calls = CacheStats(), []

        def compute(indices, right=right, decode=decode, calls=calls):
            calls.append(indices)
            return [decode(right)]

        (served,) = cached_compute(
            [text],
            compute,
            cache=TieredCache([LruCache(1 << 20), l3]),
            namespace=namespace,
            model=model,
            version="v1",
            encode=encode,
            decode=decode,
            stats=stats,
        )
        assert calls == [[0]] and (stats.invalid, stats.misses, stats.hits) == (1, 1, 0)
        assert encode(served) == right
        (stored,) = _rows(url, "SELECT value FROM nlp_cache.model_results WHERE key = %s", (key,))
        assert bytes(stored[0]) == right  # the corrupted row was overwritten


def test_postgres_terminating_our_connection_mid_run_loses_nothing(database, namespace):
    """pg_terminate_backend while the model computes (a restart, a failover): the write after
    it reconnects, so every result reaches L3, with no error counted."""
    url = url_for(database)
    l3 = PostgresCache(url)
    l3.set_many({"warm-up": b"x"})  # the connection exists before the run

    terminated: list[tuple] = []

    def terminate():
        terminated[:] = _rows(
            url_for("postgres"),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'nlp_assets_model_cache'",
            (database,),
        )

    model = CountingModel(during=terminate)
    out, stats, warnings = _embed(TieredCache([LruCache(1 << 20), l3]), model, namespace)
    assert terminated == [(True,)]  # our one connection was killed
    assert len(out) == len(TEXTS) and (stats.errors, warnings) == (0, [])
    stored = _rows(
        url, "SELECT count(*) FROM nlp_cache.model_results WHERE key LIKE %s", (f"{namespace}:%",)
    )
    assert stored[0][0] == len(TEXTS)


def test_postgres_refusing_connections_mid_run_never_fails_and_warns_once(database, namespace):
    """The database stops taking connections while the model computes: the results are still
    the model's, the step warns once and counts the error, Redis keeps them; once the database
    is back, the next run fills L3 again."""
    url = url_for(database)
    l3 = PostgresCache(url, retry_after_s=0)
    cache = TieredCache([RedisCache(REDIS_URL, ttl_seconds=600), l3])
    admin = admin_connection()

    def go_away():
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
                    sql.Identifier(database)
                )
            )
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )

    try:
        model = CountingModel(during=go_away)
        out, stats, warnings = _embed(cache, model, namespace)
        expected = [_vector(t) for t in TEXTS]
        np.testing.assert_array_equal(np.vstack(out), np.vstack(expected))
        assert stats.errors >= 1 and len(warnings) == 1 and "running uncached" in warnings[0]
        assert "postgres" in warnings[0]
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(database))
            )
        admin.close()
    assert _flush_namespace(namespace) == len(TEXTS)  # Redis had them all
    _, stats, warnings = _embed(cache, CountingModel(), namespace)
    assert stats.errors == 0 and not warnings
    assert _rows(url, "SELECT count(*) FROM nlp_cache.model_results")[0][0] == len(TEXTS)


def test_a_closed_postgres_port_never_fails_the_step_and_keeps_the_password_out_of_logs(
    lake_with_inputs, models, namespace, monkeypatch
):
    monkeypatch.setenv("NLP_TEST_REDIS_URL", REDIS_URL)
    monkeypatch.setenv(
        "NLP_TEST_CACHE_DATABASE_URL", "postgresql://nlp:do-not-log-me@127.0.0.1:1/cache"
    )
    result = _materialize(lake_with_inputs, models, namespace)
    assert result.success
    for step in MODEL_STEPS:
        meta = step_metadata(result, step)
        assert meta["cache_errors"] >= 1 and meta["cache_hits"] + meta["cache_misses"] == N_DOCS
        assert Lake(lake_with_inputs).read_day(step, DAY).height == N_DOCS
    assert len([m for m in result.logs if "postgres" in m and "uncached" in m]) == len(MODEL_STEPS)
    assert all("do-not-log-me" not in m for m in result.logs)


def test_expired_rows_are_never_served_and_the_purge_deletes_only_them(database, namespace):
    url = url_for(database)
    l3 = PostgresCache(url, ttl_seconds=30 * 86_400)
    model = CountingModel()
    _embed(TieredCache([LruCache(1 << 20), l3]), model, namespace)
    _rows(
        url,
        "UPDATE nlp_cache.model_results SET expires_at = now() - interval '1 second' "
        "WHERE key = ANY(%s)",
        ([k for (k,) in _rows(url, "SELECT key FROM nlp_cache.model_results")][:5],),
    )
    _, stats, _ = _embed(TieredCache([LruCache(1 << 20), l3]), model, namespace)
    assert (stats.hits, stats.misses) == (len(TEXTS) - 5, 5)  # the 5 expired recomputed
    assert len(model.computed) == len(TEXTS) + 5
    (days,) = _rows(
        url, "SELECT min(expires_at - now()) FROM nlp_cache.model_results"
    )  # recomputed rows got a new lifetime
    assert math.isclose(days[0].total_seconds(), 30 * 86_400, rel_tol=0.01)

    _rows(
        url,
        "UPDATE nlp_cache.model_results SET expires_at = now() - interval '1 day' "
        "WHERE key IN (SELECT key FROM nlp_cache.model_results ORDER BY key LIMIT 7)",
    )
    assert l3.purge_expired(limit=5) == 5 and l3.purge_expired() == 2
    assert _rows(url, "SELECT count(*) FROM nlp_cache.model_results")[0][0] == len(TEXTS) - 7
