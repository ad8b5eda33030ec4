"""Model results cached by (model name, cache version, sha256 of the model's input).

The cache version names everything besides the input that changes a result (weights version,
dtype, max_length, pooling, labels: see `resources.models`), so a configuration change misses
instead of serving results computed under the old one.

Redis when a URL is configured (shared by every run worker; TLS with `rediss://`, a password
from the environment), an in-process LRU otherwise. Values are plain bytes this module defines
(float32 vectors, UTF-8 JSON), never pickle, and every value read is validated (length, type,
finiteness, value range) before use: one that fails is a miss, counted in `cache_invalid`,
recomputed and overwritten. The cache is an optimisation only: when Redis is unreachable or
fails mid-run, lookups count as misses, the model computes, the caller is warned once and the
run goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections import OrderedDict
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
        if unit_norm and abs(float(np.linalg.norm(vector)) - 1.0) > UNIT_NORM_TOLERANCE:
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
    description: str

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def set_many(self, items: dict[str, bytes]) -> None: ...


class LruCache:
    """In-process LRU with a byte budget and a TTL; thread-safe."""

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


# -- using a cache ------------------------------------------------------------------------------


@dataclass
class CacheStats:
    """What one step's lookups did: the contract's `cache_hits`, `cache_misses`,
    `cache_errors`, `cache_invalid` (cached values that failed validation: counted in the
    misses too, recomputed and overwritten) and the seconds the model itself ran."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    invalid: int = 0
    model_seconds: float = 0.0
    warned: bool = False
    warned_invalid: bool = False
    warnings: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, float | int]:
        return {
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "cache_errors": self.errors,
            "cache_invalid": self.invalid,
            "model_seconds": round(self.model_seconds, 3),
        }


def _warn_once(stats: CacheStats, warn: Callable[[str], None] | None, message: str) -> None:
    stats.errors += 1
    if not stats.warned:
        stats.warned = True
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

    The cache never fails the caller: a backend error counts in `stats.errors`, warns once,
    and the lookups it covered are computed; a value `decode` refuses (any exception) counts
    in `stats.invalid`, warns once, and is recomputed and overwritten.
    """
    if input_keys is not None and len(input_keys) != len(texts):
        raise ValueError(f"{len(input_keys)} input keys for {len(texts)} texts")
    hashes = list(input_keys) if input_keys is not None else [text_key(t) for t in texts]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    distinct = list(first)
    keys = [cache_key(namespace, model, version, h) for h in distinct]
    found: dict[str, T] = {}
    if cache is not None and keys:
        try:
            with tracing.span(
                "cache get", {"nlp.cache": cache.description, "nlp.keys": len(keys)}
            ) as span:
                raw = cache.get_many(keys)
                span.set_attribute("nlp.found", sum(v is not None for v in raw))
        except Exception as error:  # any backend failure: compute instead
            raw = [None] * len(keys)
            _warn_once(
                stats,
                warn,
                f"model cache {cache.description} unavailable, running "
                f"uncached: {type(error).__name__}: {redact_url(str(error))}",
            )
        for h, value in zip(distinct, raw, strict=True):
            if value is None:
                continue
            try:
                found[h] = decode(value)
            except Exception as error:  # corrupted or foreign: a miss, recomputed below
                stats.invalid += 1
                if not stats.warned_invalid:
                    stats.warned_invalid = True
                    message = (
                        f"model cache {cache.description}: a cached {model} result failed "
                        f"validation ({type(error).__name__}: {str(error)[:200]}); recomputed"
                    )
                    stats.warnings.append(message)
                    if warn is not None:
                        warn(message)
    missing = [h for h in distinct if h not in found]
    stats.hits += sum(1 for h in hashes if h in found)
    stats.misses += sum(1 for h in hashes if h not in found)
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
        if cache is not None:
            try:
                with tracing.span(
                    "cache set", {"nlp.cache": cache.description, "nlp.keys": len(new)}
                ):
                    cache.set_many(
                        {cache_key(namespace, model, version, h): encode(v) for h, v in new.items()}
                    )
            except Exception as error:
                _warn_once(
                    stats,
                    warn,
                    f"model cache {cache.description} write failed, "
                    f"running uncached: {type(error).__name__}: {redact_url(str(error))}",
                )
    return [found[h] for h in hashes]


# -- the Dagster resource -----------------------------------------------------------------------

_backends: dict[tuple[Any, ...], ResultCache] = {}
_backends_lock = threading.Lock()


class ModelCacheResource(dg.ConfigurableResource):
    """Where model results are cached. The Redis URL and password come from environment
    variables named here (never from run config); without a URL, an in-process LRU serves."""

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
        }


def backend_for(config: dict[str, Any]) -> ResultCache | None:
    """The backend of a `ModelCacheResource.worker_config()`: one per process and config."""
    if not config["enabled"]:
        return None
    url, password = config["url"], config["password"]
    ttl = config["ttl_seconds"] or None
    key = (url, hashlib.sha256(password.encode()).hexdigest(), ttl, config["lru_max_mb"])
    with _backends_lock:
        if key not in _backends:
            _backends[key] = (
                RedisCache(
                    url,
                    password=password or None,
                    ttl_seconds=ttl,
                    ssl_ca_certs=config["ssl_ca_certs"] or None,
                )
                if url
                else LruCache(config["lru_max_mb"] << 20, ttl)
            )
        return _backends[key]
