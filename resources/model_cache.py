"""Model results cached by (model name, cache version, sha256 of the model's input).

The cache version names everything besides the input that changes a result (weights version,
dtype, max_length, pooling, labels: see `resources.models`), so a configuration change misses
instead of serving results computed under the old one.

Three levels: an in-process LRU (L1, when no Redis is configured), Redis (L2, shared by every
run worker; TLS with `rediss://`, a password from the environment) and Postgres (L3, when
`NLP_CACHE_DATABASE_URL` is set: kept about 30 days, so a result evicted from Redis or lost with
a Redis restart is read instead of recomputed). A lookup reads the levels in order; a hit in a
lower level fills the levels above it; a computed result is written to every level. Values are
plain bytes this module defines
(float32 vectors, UTF-8 JSON), never pickle, and every value read is validated (length, type,
finiteness, value range) before use: one that fails is a miss, counted in `cache_invalid`,
recomputed and overwritten. The cache is an optimisation only: when a level is unreachable or
fails mid-run, its lookups count as misses (the levels below still answer), the model computes,
the caller is warned once and the run goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import dagster as dg
import numpy as np
from pydantic import Field

from nlp_assets import tracing
from nlp_assets.resources.warehouse import redact_url

T = TypeVar("T")

#: Keys per MGET / pipeline round trip.
CHUNK = 1_000


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_key(settings: dict[str, Any]) -> str:
    """A short digest of the settings that change a model's output (part of a cache version)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def cache_key(namespace: str, model: str, version: str, text_sha256: str) -> str:
    return f"{namespace}:{model}:{version}:{text_sha256}"


# -- value codecs: plain bytes, no pickle; decoders validate ------------------------------------

#: How far a cached unit vector's norm may be from 1 (float32 round trip: about 1e-7).
UNIT_NORM_TOLERANCE = 1e-3
#: How far cached class probabilities may sum from 1.
PROBABILITY_SUM_TOLERANCE = 1e-3
ENTITY_KEYS = frozenset({"text", "label", "start_char", "end_char"})


class InvalidCachedValue(ValueError):
    """A cached value that is not what the model would return: treated as a miss."""


def encode_vector(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def vector_codec(
    dim: int, *, unit_norm: bool = False
) -> tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]:
    """float32 vectors of `dim` values; the decoder refuses a wrong length, non-finite values
    and (with `unit_norm`, for L2-normalised embeddings) a norm away from 1."""

    def decode(raw: bytes) -> np.ndarray:
        if len(raw) != 4 * dim:
            raise InvalidCachedValue(f"cached vector has {len(raw)} bytes, expected {4 * dim}")
        vector = np.frombuffer(raw, dtype="<f4").copy()
        if not np.isfinite(vector).all():
            raise InvalidCachedValue("cached vector has non-finite values")
        with np.errstate(over="ignore"):  # huge finite values: an infinite norm, refused
            norm = float(np.linalg.norm(vector)) if unit_norm else 1.0
        if abs(norm - 1.0) > UNIT_NORM_TOLERANCE:
            raise InvalidCachedValue("cached vector is not of unit length")
        return vector

    return encode_vector, decode


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_json(raw: bytes) -> Any:
    """Strict JSON (no NaN/Infinity); no shape check: use a validating codec for results."""
    return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise InvalidCachedValue(f"cached JSON holds {name}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entities(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidCachedValue(f"cached entities are a {type(value).__name__}, not a list")
    for entity in value:
        if not isinstance(entity, dict) or set(entity) != ENTITY_KEYS:
            raise InvalidCachedValue(f"cached entity is not a {sorted(ENTITY_KEYS)} object")
        start, end = entity["start_char"], entity["end_char"]
        if not (isinstance(entity["text"], str) and isinstance(entity["label"], str)):
            raise InvalidCachedValue("cached entity text or label is not a string")
        if not (_is_int(start) and _is_int(end) and 0 <= start <= end):
            raise InvalidCachedValue(f"cached entity span {start!r}..{end!r} is invalid")
    return value


def entities_codec() -> tuple[Callable[[Any], bytes], Callable[[bytes], list[dict[str, Any]]]]:
    """Entity lists (`text`, `label`, `start_char`, `end_char`) as JSON, validated on read."""
    return encode_json, lambda raw: _entities(decode_json(raw))


def probabilities_codec(
    n_labels: int,
) -> tuple[Callable[[Any], bytes], Callable[[bytes], list[float]]]:
    """Class probabilities as JSON: `n_labels` finite numbers in [0, 1] summing to 1."""

    def decode(raw: bytes) -> list[float]:
        value = decode_json(raw)
        if not isinstance(value, list) or len(value) != n_labels:
            raise InvalidCachedValue(f"cached probabilities are not a list of {n_labels}")
        if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in value):
            raise InvalidCachedValue("cached probabilities are not all numbers")
        if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in value):
            raise InvalidCachedValue("cached probabilities are out of [0, 1]")
        if abs(math.fsum(value) - 1.0) > PROBABILITY_SUM_TOLERANCE:
            raise InvalidCachedValue("cached probabilities do not sum to 1")
        return [float(p) for p in value]

    return encode_json, decode


# -- backends -----------------------------------------------------------------------------------


class ResultCache(Protocol):
    """A cache level. Backends of this module also say which `level` they are (1 LRU,
    2 Redis, 3 Postgres: the `cache_hits_l<n>` metadata); a backend without one counts as 1."""

    description: str

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def set_many(self, items: dict[str, bytes]) -> None: ...


class LruCache:
    """In-process LRU with a byte budget and a TTL; thread-safe."""

    level = 1

    def __init__(self, max_bytes: int = 512 << 20, ttl_seconds: int | None = None):
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self.description = f"in-process LRU ({max_bytes >> 20} MiB)"
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        out: list[bytes | None] = []
        with self._lock:
            for key in keys:
                item = self._items.get(key)
                if item is None or (item[0] and item[0] < now):
                    if item is not None:
                        self._drop(key)
                    out.append(None)
                    continue
                self._items.move_to_end(key)
                out.append(item[1])
        return out

    def set_many(self, items: dict[str, bytes]) -> None:
        expires = time.monotonic() + self.ttl_seconds if self.ttl_seconds else 0.0
        with self._lock:
            for key, value in items.items():
                if key in self._items:
                    self._drop(key)
                if len(value) > self.max_bytes:
                    continue
                self._items[key] = (expires, value)
                self._bytes += len(value) + len(key)
            while self._bytes > self.max_bytes and self._items:
                self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        _, value = self._items.pop(key)
        self._bytes -= len(value) + len(key)

    def __len__(self) -> int:
        return len(self._items)


class RedisCache:
    """Redis (MGET / pipelined SET with TTL). Errors propagate to `cached_compute`, which
    degrades to computing; after a failure the cache stays off for `retry_after_s`, so a dead
    server does not cost a connect timeout per batch."""

    level = 2

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        ttl_seconds: int | None = None,
        ssl_ca_certs: str | None = None,
        timeout_s: float = 2.0,
        retry_after_s: float = 30.0,
    ):
        import redis

        kwargs: dict[str, Any] = {
            "socket_connect_timeout": timeout_s,
            "socket_timeout": timeout_s,
            "health_check_interval": 30,
        }
        if password:
            kwargs["password"] = password
        if url.startswith("rediss://") and ssl_ca_certs:
            kwargs["ssl_ca_certs"] = ssl_ca_certs
        self.client = redis.Redis.from_url(url, **kwargs)
        self.ttl_seconds = ttl_seconds
        self.retry_after_s = retry_after_s
        self.description = f"redis {redact_url(url)}"
        self._down_until = 0.0

    def _check_up(self) -> None:
        if time.monotonic() < self._down_until:
            raise CacheUnavailable(f"{self.description} failed recently; not retried yet")

    def _failed(self) -> None:
        self._down_until = time.monotonic() + self.retry_after_s

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._check_up()
        out: list[bytes | None] = []
        try:
            for start in range(0, len(keys), CHUNK):
                # the client is not `decode_responses`: values come back as bytes (or None)
                values = self.client.mget(list(keys[start : start + CHUNK]))
                out.extend(cast("list[bytes | None]", values))
        except Exception:
            self._failed()
            raise
        return out

    def set_many(self, items: dict[str, bytes]) -> None:
        self._check_up()
        pairs = list(items.items())
        try:
            for start in range(0, len(pairs), CHUNK):
                pipe = self.client.pipeline(transaction=False)
                for key, value in pairs[start : start + CHUNK]:
                    pipe.set(key, value, ex=self.ttl_seconds or None)
                pipe.execute()
        except Exception:
            self._failed()
            raise


class CacheUnavailable(RuntimeError):
    """The cache backend is in its back-off window after a failure."""


#: Expired L3 rows one purge deletes at most (it runs again on a later write).
PURGE_LIMIT = 10_000


class PostgresCache:
    """L3: one table `<schema>.model_results` (key = the cache key, value bytea, created_at,
    expires_at indexed). Reads skip expired rows (`expires_at > now()`); writes upsert with a new
    expiry. Expired rows are deleted on write, at most `PURGE_LIMIT` rows once per
    `purge_every_s` per process, so the table stays about `ttl_seconds` deep with no job to run.

    The connection goes through `WarehouseResource.connect` (its libpq settings, TLS variables
    and redacted errors). A dropped connection (a Postgres restart, a terminated backend) is
    reconnected once at once; a second failure propagates to `cached_compute`, which degrades to
    computing, and the level stays off for `retry_after_s`."""

    level = 3

    def __init__(
        self,
        url: str,
        *,
        schema: str = "nlp_cache",
        ttl_seconds: int | None = 30 * 86_400,
        timeout_s: float = 2.0,
        retry_after_s: float = 30.0,
        purge_every_s: float = 3_600.0,
    ):
        from psycopg2 import sql

        self.url, self.schema = url, schema
        self.ttl_seconds = ttl_seconds or 100 * 365 * 86_400  # 0 = no expiry: a century
        self.timeout_s, self.retry_after_s = timeout_s, retry_after_s
        self.purge_every_s = purge_every_s
        self.description = f"postgres {redact_url(url, keep_user=True)} ({schema}.model_results)"
        self.table = sql.Identifier(schema, "model_results")
        self._conn: Any = None
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._next_purge = 0.0

    def _connect(self) -> Any:
        from psycopg2 import sql

        from nlp_assets.resources.warehouse import WarehouseResource

        conn = WarehouseResource(
            database_url=self.url, connect_timeout_s=max(1, math.ceil(self.timeout_s))
        ).connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET application_name = 'nlp_assets_model_cache'")
            cur.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (str(int(self.timeout_s * 1000)),),
            )
            # DDL under an advisory lock: concurrent CREATE ... IF NOT EXISTS can still race
            conn.autocommit = False
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
            cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value bytea NOT NULL, "
                    "created_at timestamptz NOT NULL DEFAULT now(), "
                    "expires_at timestamptz NOT NULL)"
                ).format(self.table)
            )
            cur.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS model_results_expires_at ON {} (expires_at)"
                ).format(self.table)
            )
            conn.commit()
            conn.autocommit = True
        return conn

    def _run(self, work: Callable[[Any], T]) -> T:
        """`work(cursor)` on the connection, reconnecting once if the connection dropped."""
        import psycopg2

        if time.monotonic() < self._down_until:
            raise CacheUnavailable(f"{self.description} failed recently; not retried yet")
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = self._connect()
                    with self._conn.cursor() as cur:
                        return work(cur)
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    self._close()  # the server went away: one new connection, at once
                    if attempt == 2:
                        self._down_until = time.monotonic() + self.retry_after_s
                        raise
                except Exception:  # cannot connect (ConnectionError), or the query failed
                    self._close()
                    self._down_until = time.monotonic() + self.retry_after_s
                    raise
        raise AssertionError("unreachable")

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        from psycopg2 import sql

        query = sql.SQL(
            "SELECT key, value FROM {} WHERE key = ANY(%s) AND expires_at > now()"
        ).format(self.table)

        def read(cur: Any) -> dict[str, bytes]:
            rows: dict[str, bytes] = {}
            for start in range(0, len(keys), CHUNK):
                cur.execute(query, (list(keys[start : start + CHUNK]),))
                rows.update((key, bytes(value)) for key, value in cur.fetchall())
            return rows

        rows = self._run(read)
        return [rows.get(key) for key in keys]

    def set_many(self, items: dict[str, bytes]) -> None:
        from psycopg2 import sql
        from psycopg2.extras import execute_values

        query = sql.SQL(
            "INSERT INTO {} (key, value, created_at, expires_at) VALUES %s "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
            "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at"
        ).format(self.table)
        template = "(%s, %s, now(), now() + make_interval(secs => %s))"
        pairs = list(items.items())

        def write(cur: Any) -> None:
            for start in range(0, len(pairs), CHUNK):
                rows = [(k, v, self.ttl_seconds) for k, v in pairs[start : start + CHUNK]]
                execute_values(cur, query.as_string(cur), rows, template=template)

        self._run(write)
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.purge_every_s
            self.purge_expired()

    def purge_expired(self, limit: int = PURGE_LIMIT) -> int:
        """Delete up to `limit` expired rows; the number deleted."""
        from psycopg2 import sql

        query = sql.SQL(
            "DELETE FROM {table} WHERE key IN "
            "(SELECT key FROM {table} WHERE expires_at <= now() LIMIT %s)"
        ).format(table=self.table)

        def purge(cur: Any) -> int:
            cur.execute(query, (limit,))
            return int(cur.rowcount)

        return self._run(purge)


class TieredCache:
    """Cache levels read in order (L1 or L2, then L3): `cached_compute` validates each value,
    fills the levels above a hit and writes computed results to every level. As a plain
    `ResultCache`, `get_many` returns each key's first value found and `set_many` writes to
    every level (a failing level raises after the others were written)."""

    def __init__(self, levels: Sequence[ResultCache]):
        self.levels = tuple(levels)
        self.description = " + ".join(level.description for level in self.levels)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(keys)
        for level in self.levels:
            todo = [i for i, value in enumerate(out) if value is None]
            if not todo:
                break
            for i, value in zip(todo, level.get_many([keys[i] for i in todo]), strict=True):
                out[i] = value
        return out

    def set_many(self, items: dict[str, bytes]) -> None:
        errors = []
        for level in self.levels:
            try:
                level.set_many(items)
            except Exception as error:
                errors.append(error)
        if errors:
            raise errors[0]


def cache_levels(cache: ResultCache | None) -> tuple[ResultCache, ...]:
    """The levels of a cache, in lookup order (a single backend is one level)."""
    if cache is None:
        return ()
    return cache.levels if isinstance(cache, TieredCache) else (cache,)


def level_of(backend: ResultCache) -> int:
    return int(getattr(backend, "level", 1))


# -- using a cache ------------------------------------------------------------------------------


@dataclass
class CacheStats:
    """What one step's lookups did: the contract's `cache_hits`, `cache_misses`,
    `cache_errors`, `cache_invalid` (cached values that failed validation: counted in the
    misses too, recomputed and overwritten), the hits by level (`cache_hits_l1` in-process,
    `_l2` Redis, `_l3` Postgres) and the seconds the model itself ran."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    invalid: int = 0
    model_seconds: float = 0.0
    warned: bool = False
    warned_invalid: bool = False
    warnings: list[str] = field(default_factory=list)
    level_hits: dict[int, int] = field(default_factory=dict)

    def metadata(self) -> dict[str, float | int]:
        return {
            "cache_hits": self.hits,
            **{f"cache_hits_l{n}": self.level_hits.get(n, 0) for n in LEVELS},
            "cache_misses": self.misses,
            "cache_errors": self.errors,
            "cache_invalid": self.invalid,
            "model_seconds": round(self.model_seconds, 3),
        }


#: The cache levels a step reports hits for: 1 in-process LRU, 2 Redis, 3 Postgres.
LEVELS = (1, 2, 3)


def _warn_once(stats: CacheStats, warn: Callable[[str], None] | None, message: str) -> None:
    stats.errors += 1
    if not stats.warned:
        stats.warned = True
        stats.warnings.append(message)
        if warn is not None:
            warn(message)


def _read_level(
    level: ResultCache,
    namespace: str,
    model: str,
    version: str,
    hashes: list[str],
    stats: CacheStats,
    warn: Callable[[str], None] | None,
) -> list[bytes | None]:
    """One level's values for `hashes` (all None when the level fails: warned once)."""
    keys = [cache_key(namespace, model, version, h) for h in hashes]
    try:
        with tracing.span(
            "cache get", {"nlp.cache": level.description, "nlp.keys": len(keys)}
        ) as span:
            raw = level.get_many(keys)
            span.set_attribute("nlp.found", sum(v is not None for v in raw))
        return raw
    except Exception as error:  # any backend failure: the levels below, or compute, instead
        _warn_once(
            stats,
            warn,
            f"model cache {level.description} unavailable, running uncached: "
            f"{type(error).__name__}: {redact_url(str(error))}",
        )
        return [None] * len(keys)


def _write_level(
    level: ResultCache,
    items: dict[str, bytes],
    stats: CacheStats,
    warn: Callable[[str], None] | None,
) -> None:
    try:
        with tracing.span("cache set", {"nlp.cache": level.description, "nlp.keys": len(items)}):
            level.set_many(items)
    except Exception as error:
        _warn_once(
            stats,
            warn,
            f"model cache {level.description} write failed, running uncached: "
            f"{type(error).__name__}: {redact_url(str(error))}",
        )


def _count_invalid(
    stats: CacheStats,
    warn: Callable[[str], None] | None,
    level: ResultCache,
    model: str,
    error: Exception,
) -> None:
    stats.invalid += 1
    if not stats.warned_invalid:
        stats.warned_invalid = True
        message = (
            f"model cache {level.description}: a cached {model} result failed "
            f"validation ({type(error).__name__}: {str(error)[:200]}); recomputed"
        )
        stats.warnings.append(message)
        if warn is not None:
            warn(message)


def cached_compute(
    texts: Sequence[str],
    compute: Callable[[list[int]], Sequence[T]],
    *,
    cache: ResultCache | None,
    namespace: str,
    model: str,
    version: str,
    encode: Callable[[T], bytes],
    decode: Callable[[bytes], T],
    stats: CacheStats,
    warn: Callable[[str], None] | None = None,
    input_keys: Sequence[str] | None = None,
) -> list[T]:
    """Results for `texts` (in order): cached ones read, the rest computed once per distinct
    input by `compute(indices)` (indices into `texts`) and written back.

    An input is identified by sha256 of its text, or by `input_keys` (one digest per text)
    when the model reads more than the text (the embedder: its token ids). `version` must name
    every setting that changes a result.

    The cache's levels (`cache_levels`) are read in order, each for what the levels above it
    missed; a hit fills the levels above it, a computed result is written to every level.

    The cache never fails the caller: a level's error counts in `stats.errors`, warns once,
    and the lookups it covered go to the next level or are computed; a value `decode` refuses
    (any exception) counts in `stats.invalid`, warns once, and is read from a lower level or
    recomputed, and overwritten.
    """
    if input_keys is not None and len(input_keys) != len(texts):
        raise ValueError(f"{len(input_keys)} input keys for {len(texts)} texts")
    hashes = list(input_keys) if input_keys is not None else [text_key(t) for t in texts]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    distinct = list(first)
    levels = cache_levels(cache)
    found: dict[str, T] = {}
    # the bytes of each valid hit and the index of the level it came from (to fill those above)
    raw_found: dict[str, tuple[int, bytes]] = {}
    for depth, level in enumerate(levels):
        pending = [h for h in distinct if h not in found]
        if not pending:
            break
        raw = _read_level(level, namespace, model, version, pending, stats, warn)
        for h, value in zip(pending, raw, strict=True):
            if value is None:
                continue
            try:
                found[h] = decode(value)
            except Exception as error:  # corrupted or foreign: a miss, recomputed below
                _count_invalid(stats, warn, level, model, error)
                continue
            raw_found[h] = (depth, value)
    counts = Counter(hashes)
    for h, (depth, _) in raw_found.items():
        n = level_of(levels[depth])
        stats.level_hits[n] = stats.level_hits.get(n, 0) + counts[h]
    stats.hits += sum(counts[h] for h in found)
    missing = [h for h in distinct if h not in found]
    stats.misses += sum(counts[h] for h in missing)
    computed_raw: dict[str, bytes] = {}
    if missing:
        started = time.perf_counter()
        with tracing.span(
            "model batch", {"nlp.model": f"{model}@{version}", "nlp.texts": len(missing)}
        ):
            computed = compute([first[h] for h in missing])
        stats.model_seconds += time.perf_counter() - started
        if len(computed) != len(missing):
            raise ValueError(f"model returned {len(computed)} results for {len(missing)} texts")
        new = dict(zip(missing, computed, strict=True))
        found |= new
        if levels:
            computed_raw = {h: encode(v) for h, v in new.items()}
    for depth, level in enumerate(levels):
        # computed results go to every level; a hit fills the levels above the one it came from
        items = {
            cache_key(namespace, model, version, h): value
            for h, (hit_depth, value) in raw_found.items()
            if hit_depth > depth
        } | {cache_key(namespace, model, version, h): v for h, v in computed_raw.items()}
        if items:
            _write_level(level, items, stats, warn)
    return [found[h] for h in hashes]


# -- the Dagster resource -----------------------------------------------------------------------

_backends: dict[tuple[Any, ...], ResultCache] = {}
_backends_lock = threading.Lock()


class ModelCacheResource(dg.ConfigurableResource):
    """Where model results are cached. The Redis URL and password and the Postgres URL come
    from environment variables named here (never from run config); without a Redis URL, an
    in-process LRU serves; without a Postgres URL, there is no L3."""

    url_env_var: str = Field(
        default="REDIS_URL",
        description="Environment variable holding the Redis URL (redis:// or rediss:// for "
        "TLS, optionally with a db number). Unset or empty: in-process LRU.",
    )
    password_env_var: str = Field(
        default="REDIS_PASSWORD",
        description="Environment variable holding the Redis password (if not in the URL).",
    )
    ssl_ca_certs: str = Field(default="", description="CA bundle for rediss:// (optional).")
    namespace: str = Field(
        default="nlp", description="Key prefix: one per deployment sharing a Redis."
    )
    ttl_seconds: int = Field(default=30 * 86_400, description="Entry lifetime; 0 = no expiry.")
    lru_max_mb: int = Field(default=512, description="In-process LRU size when no Redis.")
    database_url_env_var: str = Field(
        default="NLP_CACHE_DATABASE_URL",
        description="Environment variable holding the libpq URL of the Postgres database of "
        "the third level (L3, behind the LRU or Redis). Unset or empty: no L3.",
    )
    database_schema: str = Field(
        default="nlp_cache", description="Postgres schema of L3's table `model_results`."
    )
    enabled: bool = True

    def backend(self) -> ResultCache | None:
        """One backend per process and configuration (the LRU must outlive a step)."""
        return backend_for(self.worker_config())

    def worker_config(self) -> dict[str, Any]:
        """What another process (a Spark executor's Python worker) needs to reach the same
        cache: plain values, the URL and password resolved from this process's environment."""
        return {
            "enabled": self.enabled,
            "url": os.environ.get(self.url_env_var, "") if self.url_env_var else "",
            "password": (
                os.environ.get(self.password_env_var, "") if self.password_env_var else ""
            ),
            "ttl_seconds": self.ttl_seconds,
            "lru_max_mb": self.lru_max_mb,
            "ssl_ca_certs": self.ssl_ca_certs,
            "namespace": self.namespace,
            "database_url": (
                os.environ.get(self.database_url_env_var, "") if self.database_url_env_var else ""
            ),
            "database_schema": self.database_schema,
        }


def backend_for(config: dict[str, Any]) -> ResultCache | None:
    """The backend of a `ModelCacheResource.worker_config()`: one per process and config
    (Redis or the LRU, then Postgres when a database URL is given)."""
    if not config["enabled"]:
        return None
    url, password = config["url"], config["password"]
    database_url = config.get("database_url", "")
    schema = config.get("database_schema", "nlp_cache")
    ttl = config["ttl_seconds"] or None
    key = (
        url,
        hashlib.sha256(password.encode()).hexdigest(),
        ttl,
        config["lru_max_mb"],
        hashlib.sha256(database_url.encode()).hexdigest(),
        schema,
    )
    with _backends_lock:
        if key not in _backends:
            first: ResultCache = (
                RedisCache(
                    url,
                    password=password or None,
                    ttl_seconds=ttl,
                    ssl_ca_certs=config["ssl_ca_certs"] or None,
                )
                if url
                else LruCache(config["lru_max_mb"] << 20, ttl)
            )
            _backends[key] = (
                TieredCache([first, PostgresCache(database_url, schema=schema, ttl_seconds=ttl)])
                if database_url
                else first
            )
        return _backends[key]


def model_cache_from_env() -> ModelCacheResource:
    """The result cache of the environment `NLP_ENV` selects. Redis URL and password are read
    from REDIS_URL / REDIS_PASSWORD at run time (never config); without REDIS_URL an
    in-process LRU caches model results."""
    from nlp_assets import settings

    return ModelCacheResource(
        namespace=settings.environment().cache_namespace,  # NLP_CACHE_NAMESPACE, else the env's
        ttl_seconds=settings.cache_ttl_seconds(),
    )
