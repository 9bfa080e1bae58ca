"""Per-key rate limits: token buckets for uploads (POST /v1/samples) and for every other request
under /v1 and /ui, answered with 429 problem+json and Retry-After before a byte of the body is
read.

The bucket lives in Redis when the broker is Redis, so every API process on every host shares
one budget per key (one Lua script: refill by elapsed time, take tokens, all atomic, with
Redis's clock so that hosts' clocks do not matter). A process takes a lease of up to 1/20 of the
burst at a time and spends it locally for at most ``LEASE_SECONDS``, so a busy key costs one
Redis round trip per lease rather than per request (a round trip was the largest cost of a
read); one lease request per key is in flight at a time (concurrent requests wait for it rather
than each draining a lease); the shared budget is never exceeded, and a lease left unspent by
one process makes the others stricter by at most that many tokens for that long. Bursts under 20
lease one token, as before. Otherwise (embedded default), or while Redis does not answer, each
process keeps its own buckets: N processes then allow N times the rate, and an unreachable Redis
makes the limit looser, never the API unavailable."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi.concurrency import run_in_threadpool
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from services.api import ui_auth
from services.api.deps import bearer_token, known_key, lookup_principal
from services.api.middleware import is_upload, send_problem

log = structlog.get_logger(__name__)

LIMITED_PREFIXES = ("/v1/", "/ui/")
UI_COOKIE = b"ctdna_session="
REDIS_PREFIX = "ctdna:ratelimit:"
# After a Redis error the local buckets serve alone for this long before Redis is tried again,
# so an outage costs one short timeout, not one per request.
REDIS_BACKOFF_SECONDS = 5.0

# How long a process may spend a lease of tokens taken from the shared bucket, and how much of
# the burst one lease may take.
LEASE_SECONDS = 1.0
LEASE_SHARE_OF_BURST = 20

# KEYS[1] bucket; ARGV rate (tokens/s), burst, most tokens wanted. Returns {tokens granted (0
# when none is left), seconds until a token}.
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = 0
local wait = 0
if tokens >= 1 then
  granted = math.min(wanted, math.floor(tokens))
  tokens = tokens - granted
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring(wait)}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    rate: float  # tokens per second; 0 = no limit
    burst: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0


class LocalBuckets:
    """Token buckets in this process's memory, bounded to the most recently used keys."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys

    def take(self, key: str, limit: Limit, now: float) -> Decision:
        tokens, at = self._state.pop(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + max(0.0, now - at) * limit.rate)
        decision = Decision(True) if tokens >= 1 else Decision(False, (1 - tokens) / limit.rate)
        self._state[key] = (tokens - 1 if decision.allowed else tokens, now)
        if len(self._state) > self._max_keys:
            # the least recently used bucket; forgetting it only lets that key start full
            self._state.popitem(last=False)
        return decision


class Leases:
    """Tokens this process took from a shared bucket and has not spent yet, per key, each lease
    until it expires; bounded to the most recently used keys."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self._state: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._max_keys = max_keys

    def spend(self, key: str, now: float) -> bool:
        tokens, expires = self._state.pop(key, (0, 0.0))
        if tokens < 1 or now >= expires:
            return False
        if tokens > 1:
            self._state[key] = (tokens - 1, expires)
        return True

    def keep(self, key: str, tokens: int, expires: float) -> None:
        if tokens >= 1:
            self._state[key] = (tokens, expires)
            if len(self._state) > self._max_keys:
                self._state.popitem(last=False)


class RateLimit:
    """ASGI middleware applying one bucket per (limit, key) to authenticated requests."""

    def __init__(
        self, app: ASGIApp, *, uploads: Limit, reads: Limit, redis_url: str | None
    ) -> None:
        self.app = app
        self.uploads = uploads
        self.reads = reads
        self.redis_url = redis_url
        self.local = LocalBuckets()
        self.leases = Leases()
        self._redis: Redis | None = None
        self._script: Any = None
        self._redis_down_until = 0.0
        # one lease request in flight per key: the others wait for it instead of each draining
        # a lease from the shared bucket
        self._fetching: dict[str, asyncio.Event] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        upload = is_upload(scope["method"], scope["path"])
        limit = self.uploads if upload else self.reads
        if limit.rate <= 0:
            await self.app(scope, receive, send)
            return
        decision = await self._decide(scope, limit)
        if decision is None or decision.allowed:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(decision.retry_after))
        await send_problem(
            send,
            429,
            f"rate limit for {limit.name} exceeded ({limit.rate:g}/s, burst {limit.burst}); "
            f"retry after {retry_after} s",
            scope["path"],
            headers=[(b"retry-after", str(retry_after).encode())],
            retry_after=retry_after,
        )

    async def _decide(self, scope: Scope, limit: Limit) -> Decision | None:
        """The bucket(s) a request spends from; None when it has none (no client address).

        A key this process knows to be valid, or a session cookie we signed, spends its own
        bucket. Any other key spends the client address's bucket first (a flood of invented
        keys is refused there, before any database read), then, if it turns out valid, its
        own as well: a key's budget is exact, and unknown keys buy nothing."""
        token = _bearer(scope)
        if token is not None and not known_key(f"Bearer {token}"):
            address = _address(scope)
            if address is not None:
                decision = await self._take(f"{limit.name}:{address}", limit)
                if not decision.allowed:
                    return decision
            try:
                principal = await run_in_threadpool(lookup_principal, token)
            except SQLAlchemyError:
                return None  # the route answers 503 itself
            if principal is None:
                return None  # the route answers 401
        identity = _credential_digest(scope) or _address(scope)
        if identity is None:
            return None
        return await self._take(f"{limit.name}:{identity}", limit)

    async def _take(self, key: str, limit: Limit) -> Decision:
        if self.redis_url is None:
            return self.local.take(key, limit, time.monotonic())
        while (fetching := self._fetching.get(key)) is not None:
            await fetching.wait()
        now = time.monotonic()
        if now >= self._redis_down_until:
            if self.leases.spend(key, now):
                return Decision(True)
            done = self._fetching[key] = asyncio.Event()
            try:
                return await self._take_redis(key, limit, now)
            except (RedisError, OSError) as exc:
                log.warning("ratelimit.redis_unavailable", error=str(exc)[:200])
                self._redis_down_until = now + REDIS_BACKOFF_SECONDS
            finally:
                del self._fetching[key]
                done.set()
        return self.local.take(key, limit, now)

    async def _take_redis(self, key: str, limit: Limit, now: float) -> Decision:
        if self._redis is None:
            assert self.redis_url is not None
            # created lazily, inside the server's event loop
            self._redis = Redis.from_url(
                self.redis_url, socket_timeout=0.25, socket_connect_timeout=0.25
            )
            self._script = self._redis.register_script(TAKE_SCRIPT)
        wanted = max(1, limit.burst // LEASE_SHARE_OF_BURST)
        granted, wait = await self._script(
            keys=[REDIS_PREFIX + key], args=[limit.rate, limit.burst, wanted]
        )
        if int(granted) < 1:
            return Decision(False, float(wait))
        self.leases.keep(key, int(granted) - 1, now + LEASE_SECONDS)
        return Decision(True)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


def _credential_digest(scope: Scope) -> str | None:
    """Whose budget a request spends: a digest of its Bearer key when this process knows the
    key to be valid, or of its web-view session cookie when we signed it; see _address for
    any other request. A credential nobody issued buys no budget of its own, so a flood of
    random tokens or cookies spends one address's budget, not a fresh bucket per request."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            authorization = value.decode("latin-1")
            if known_key(authorization):
                token = bearer_token(authorization)
                assert token is not None
                return _digest(token.encode("latin-1"))
        elif name == b"cookie" and UI_COOKIE in value:
            cookie = value.split(UI_COOKIE, 1)[1].split(b";", 1)[0]
            if ui_auth.signed_session(cookie.decode("latin-1")) is not None:
                return _digest(cookie)
    return None


def _address(scope: Scope) -> str | None:
    # A request without a valid key ends in 401, but on a route of patient data that 401 is an
    # audit row: its client address has a budget, so that nobody can write rows without limit.
    client = scope.get("client")
    return f"address:{client[0]}" if client else None


def _digest(credential: bytes) -> str:
    # Salted apart from the stored key hash, so that Redis never holds a piece of a verifier.
    return hashlib.sha256(b"ctdna-ratelimit:" + credential).hexdigest()[:32]
