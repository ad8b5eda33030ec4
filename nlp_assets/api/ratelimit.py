"""A token bucket per caller: in Redis (shared by every replica) or, without REDIS_URL, in the
process (one bucket per replica; `make api` on one machine).

Each request takes one token; the bucket refills at `rate` tokens a second up to `burst`. The
Redis bucket is one Lua script (atomic) on Redis's own clock, so replicas never disagree.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RateLimiterUnavailable(RuntimeError):
    """Redis could not be asked: the request is refused (503), never let through unmetered."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int  # whole seconds, at least 1 when refused


class RateLimiter:
    def __init__(
        self, *, rate: float, burst: int, redis_url: str | None = None, prefix: str = "nlp:api"
    ):
        if rate <= 0 or burst < 1:
            raise ValueError("rate limits need a rate > 0 and a burst >= 1")
        self.rate, self.burst, self.prefix = rate, burst, prefix
        self._redis = None
        self._script = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(
                redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            self._script = self._redis.register_script(_BUCKET_LUA)
        self._local: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        return self._redis is not None

    def take(self, subject: str) -> Decision:
        if self._script is not None:
            import redis

            try:
                allowed, wait = self._script(
                    keys=[f"{self.prefix}:bucket:{subject}"], args=[self.rate, self.burst]
                )
            except redis.RedisError as error:
                raise RateLimiterUnavailable(
                    f"rate limiter unavailable (Redis): {type(error).__name__}"
                ) from None
            return Decision(bool(int(allowed)), max(1, math.ceil(float(wait))))
        now = time.monotonic()
        with self._lock:
            tokens, ts = self._local.get(subject, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - ts) * self.rate)
            if tokens >= 1:
                self._local[subject] = (tokens - 1, now)
                return Decision(True, 0)
            self._local[subject] = (tokens, now)
            return Decision(False, max(1, math.ceil((1 - tokens) / self.rate)))

    def ping(self) -> None:
        if self._redis is not None:
            self._redis.ping()
