"""Provider limits shared by every worker: requests per minute and jobs in flight.

Both live on the Prefect server as global concurrency limits
(`brandforge-provider-<name>-rpm` / `-jobs`), so every worker of a fleet shares
them. Prefect's own limiter leaves throughput on the table for fine-grained API
quotas (measured: 0.23 of a 600/min budget; see the README's provider
benchmark), so this module adds the smallest thing that closes the gap: a pacer
that takes rate slots in batches and spaces requests locally, and a pool that
takes job slots in batches under one lease.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import random
import ssl
import threading
import time
import urllib.request
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import certifi
import httpx
from prefect.exceptions import ObjectAlreadyExists

from brandforge.blocks.providers.base import ImageProvider

logger = logging.getLogger("brandforge.generate")

# A job slot's lease: Prefect's shortest (the server refuses less), renewed while the job is held.
JOB_LEASE_S = 60.0

# GCLs already created/updated by this process, with the values they were set to.
_LIMITS_SET: dict[tuple[str, str], tuple[int, float]] = {}
_LIMITS_LOCK = threading.Lock()


# --------------------------------------------------------------------------- the server's write conflicts


class QuickConflictRetry(httpx.AsyncBaseTransport):
    """An httpx transport that retries the Prefect server's 503 within milliseconds.

    Measured (bench/catalog_provider.py, SQLite server, a PACER trace): 5 of 13
    rate-slot grants took 2.2–13.7 s instead of ~15 ms. Taking a slot is a
    read-then-write transaction; when another write (the server recording task
    runs and artifacts) commits in between, SQLite answers SQLITE_BUSY_SNAPSHOT
    at once, the server turns it into a 503, and Prefect's client sleeps 2, 4,
    8 s before asking again while every asset waits for that slot. A conflict
    clears as soon as the other write commits, so this transport asks again after
    20–400 ms (up to 12 times, ~2–3 s in all) before Prefect's own retries see the
    503. With 8 (~1 s), a traced run on a loaded host still fell through to the
    client's 2 s sleep once, and the provider sat idle for 2.4 s.
    """

    ATTEMPTS = 12

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        self.inner = httpx.AsyncHTTPTransport(retries=3, verify=verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.ATTEMPTS):
            response = await self.inner.handle_async_request(request)
            if response.status_code != 503 or attempt == self.ATTEMPTS - 1:
                return response
            await response.aclose()
            await asyncio.sleep(min(0.4, 0.02 * 2 ** attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.inner.aclose()


_TLS_CONTEXTS: dict[tuple[bool, str | None], ssl.SSLContext] = {}
_TLS_LOCK = threading.Lock()


def prefect_tls_context() -> ssl.SSLContext:
    """The TLS context Prefect's client would build from its settings (PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_SSL_CERT_FILE), made once: a replaced transport must verify as Prefect's own does."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    key = (bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()), PREFECT_API_SSL_CERT_FILE.value() or None)
    with _TLS_LOCK:
        ctx = _TLS_CONTEXTS.get(key)
        if ctx is None:
            if key[0]:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context(cafile=key[1] or certifi.where())
            _TLS_CONTEXTS[key] = ctx
    return ctx


def through_proxy(url: str) -> bool:
    """Whether the environment's proxy settings send requests to `url` through a proxy."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    return bool(proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(parts.hostname or "")


# API URLs whose server said that it has no CSRF protection (see `limits_client`).
_NO_CSRF: set[str] = set()


@asynccontextmanager
async def limits_client() -> AsyncIterator[Any]:
    """A Prefect client for the limit calls (slots, leases), which every waiting asset sits behind.

    Behind a proxy it is Prefect's own client: httpx applies the environment's proxies only to its
    default transport, and a server reached through a proxy is rarely the local SQLite one.

    Each call makes a new client (the callers run on many short-lived event loops), and a new Prefect
    client asks the server for a CSRF token before its first write. On a server without CSRF protection
    (the default) that is one refused request more per limit call: 104 in a 200-asset catalog
    (bench/catalog_provider.py, traced). Once a client has learnt that, later ones skip the question;
    a 403 (the server turned protection on) makes them ask again."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value() or "")
    if through_proxy(api):
        client = get_client()
    else:
        tls = prefect_tls_context()
        client = get_client(httpx_settings={"transport": QuickConflictRetry(verify=tls), "verify": tls})
    # Prefect's httpx client holds the CSRF state; there is no setting per client. If a Prefect release
    # moves it, the limit calls still work (they ask for a token each time, as before).
    http = getattr(client, "_client", None)
    if api in _NO_CSRF and hasattr(http, "enable_csrf_support"):
        http.enable_csrf_support = False
    async with client:
        try:
            yield client
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 403:
                _NO_CSRF.discard(api)
            raise
        if getattr(http, "enable_csrf_support", True) is False:
            _NO_CSRF.add(api)


# --------------------------------------------------------------------------- shared limits


async def ensure_provider_limits(provider: ImageProvider) -> None:
    """Create (or update) the provider's global rate and concurrency limits on the Prefect server.

    Rate limit: `limit` = RATE_BATCHES_HELD batches of RATE_BATCH_SECONDS of budget, slots decay
    at rpm/60 per second, so no window of t seconds sees more than limit + rpm/60·t grants across all workers.
    """
    from prefect.settings import PREFECT_API_URL

    wanted = {
        provider.rate_limit_name: (rate_limit_size(provider), provider.requests_per_minute / 60.0),
        provider.concurrency_limit_name: (provider.max_concurrent_jobs, 0.0),
    }
    api = str(PREFECT_API_URL.value())
    if all(_LIMITS_SET.get((api, n)) == v for n, v in wanted.items()):
        return
    # One setter per process at a time (tasks run on several threads and loops): the others
    # wait and then find the values cached, instead of racing to create the same limit.
    while not _LIMITS_LOCK.acquire(blocking=False):
        await asyncio.sleep(0.02)
    try:
        await _set_limits(wanted)
    finally:
        _LIMITS_LOCK.release()


async def _set_limits(wanted: dict[str, tuple[int, float]]) -> None:
    from prefect.client.orchestration import get_client

    from prefect.settings import PREFECT_API_URL

    api = str(PREFECT_API_URL.value())
    async with get_client() as client:
        for name, (limit, decay) in wanted.items():
            if _LIMITS_SET.get((api, name)) == (limit, decay):
                continue
            try:
                await client.upsert_global_concurrency_limit_by_name(name, limit, slot_decay_per_second=decay or None)
            except ObjectAlreadyExists:
                # Another task or worker created it between our read and our create: update instead.
                await client.upsert_global_concurrency_limit_by_name(name, limit, slot_decay_per_second=decay or None)
            _LIMITS_SET[(api, name)] = (limit, decay)


# How much of the budget one Prefect grant covers (see SubmitPacer). 2 s reached 0.69 of a
# 600/min budget because one slow grant (the server's write tail) starved the line; 5 s hides
# those tails (0.72–0.98).
RATE_BATCH_SECONDS = 5.0
# The Prefect limit holds this many batches, so a slow grant does not leave the provider idle: a
# slot is handed out at most a batch's time before its send time, so with 2 the runway when the next
# batch was asked for was ~5 s of queued sends, and on a loaded host (bench/catalog_provider.py
# --busy 1.0) grants that took 2–5 s left gaps of 2.3 and 4.6 s (0.871 and 0.914 of R). With 3 a
# batch more is in hand: ~10 s. The cost: workers together may burst up to this many batches of
# budget, which the provider may answer with 429 (honoured through Retry-After).
RATE_BATCHES_HELD = 3


class SubmitPacer:
    """Process-wide pacing and batched slot-taking in front of Prefect's global rate limit.

    Measured with bench/provider_throughput.py and bench/catalog_provider.py (2
    shared cores, Prefect 3.8/3.9 on SQLite), and why this exists:

    - Prefect's server decays a rate limit by floor(decay/s × seconds since the
      row was last *written*), and every grant and every refusal writes the row.
      Callers arriving faster than one per 1/decay seconds, with any jitter,
      lose most of the decay: slots stop freeing, callers are refused (423) and
      sleep a Retry-After that grows with each refusal. One slot per request:
      0.23 of a 600/min budget; at 120/min 0.75, with 740 refusals and 429s.
    - The client's `rate_limit()` funnels every acquisition through one queue
      per process, one HTTP call at a time, capping grants at 1 / round trip.
    - Through `catalog_refresh` a grant took 0.1–4 s (the server is busy
      recording the catalog's task runs): asked for only when the last batch
      was spent, every slow grant idled the provider (0.62 of R at 100 assets).

    So this process takes slots in batches — `occupy=n` for up to
    RATE_BATCH_SECONDS of budget — and asks for the next batch while the last
    one is still being spent, as soon as its own count of the slots the server
    holds for it (grants less the decay since) leaves room under the limit
    (RATE_BATCHES_HELD batches). It hands slots out locally, one send time per
    `interval`, so requests still leave evenly spaced: no refusals and no 429s
    from one process. The Prefect limit stays the authority across workers
    (another worker's grants show up here as refusals); this is the smallest
    addition that closes the gap. Thread-safe and loop-free, because Prefect
    runs async tasks on several threads and loops.
    """

    _by_name: dict[str, "SubmitPacer"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, per_second: float, batch: int, limit: int | None = None):
        self.rate = per_second
        self.interval = 1.0 / per_second
        self.batch = max(1, batch)
        self.limit = max(self.batch, limit or self.batch * RATE_BATCHES_HELD)
        self.next_at = 0.0  # next send time handed out
        self.lock = threading.Lock()
        self.tokens = 0  # Prefect slots granted to this process, not yet handed out
        self.tokens_expire = 0.0
        self.waiting = 0
        self.leader = False
        self.next_grant_at = 0.0
        # The server's row as this process reckons it: active slots as last written, and when.
        self.stored = 0
        self.written_at = 0.0

    @classmethod
    def for_provider(cls, provider: ImageProvider) -> "SubmitPacer":
        rate = provider.requests_per_minute / 60.0
        batch = rate_batch_size(provider)
        with cls._registry_lock:
            pacer = cls._by_name.get(provider.rate_limit_name)
            if pacer is None or abs(pacer.rate - rate) > 1e-9 or pacer.batch != batch:
                pacer = cls._by_name[provider.rate_limit_name] = SubmitPacer(rate, batch, rate_limit_size(provider))
            return pacer

    def reserve(self) -> float:
        """Seconds to wait for this caller's send time (the time is taken now)."""
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
            return start - now

    async def wait_turn(self) -> None:
        await asyncio.sleep(self.reserve())

    def _active(self, now: float) -> int:
        """The server's active slots at `now`, computed as the server does: it decays the row by
        floor(rate × seconds since the row was last written), and only a grant writes it (a refusal is
        rolled back). So each grant loses the fraction of a slot that had decayed: with a batch every
        5 s, a count that decayed smoothly ran ahead of the server's by ~0.5 slot per grant, and most
        asks were refused (62 of 64 in a traced run), each one more call to a busy server."""
        return max(0, self.stored - math.floor(self.rate * (now - self.written_at) + 1e-9))

    async def take(self, acquire: Callable[[int], Awaitable[int]]) -> int:
        """One Prefect slot for this caller; `acquire(n)` asks the server for n at once and returns how many
        it got (0 = refused). Returns the refusals seen."""
        refusals = 0
        counted = False
        while True:
            lead = False
            with self.lock:
                now = time.monotonic()
                if self.tokens and now > self.tokens_expire:
                    self.tokens = 0  # granted too long ago: their budget has passed
                if self.tokens and self.next_at - now <= RATE_BATCH_SECONDS:
                    self.tokens -= 1
                    if counted:
                        self.waiting -= 1
                    return refusals
                if not counted:
                    self.waiting += 1
                    counted = True
                # A slot is handed out at most a batch's time before its send time (its caller takes a
                # job slot next, which must not sit idle); the next batch is asked for meanwhile.
                lead = self._lead(now)
                pause = 0.05 if self.tokens else max(0.005, min(0.05, self.next_grant_at - now))
            if not lead:
                await asyncio.sleep(pause)
                continue
            if not await self._grant(acquire):
                refusals += 1

    async def prefetch(self, acquire: Callable[[int], Awaitable[int]]) -> bool:
        """Ask for the first batch before anyone needs it (a catalog does this while its first assets
        load): the first submission then waits for no grant. False when another caller leads or holds tokens."""
        with self.lock:
            lead = self._lead(time.monotonic())
        return lead and await self._grant(acquire)

    def _lead(self, now: float) -> bool:
        """Become the caller that asks the server for the next batch, if one is due; call under the lock."""
        if self.tokens or self.leader or now < self.next_grant_at:
            return False
        self.leader = True
        return True

    async def _grant(self, acquire: Callable[[int], Awaitable[int]]) -> bool:
        """Ask for a whole batch, even for one caller: more are coming, and a grant per caller was a
        write per submission on a busy server (measured: 0.59 of R, not 0.87). True when granted."""
        granted = 0
        sent = time.monotonic()
        try:
            granted = await acquire(self.batch)
        finally:
            with self.lock:
                self.leader = False
                now = time.monotonic()
                if granted:
                    self.tokens += granted
                    # Handed out at once, but sent one per interval behind what is already queued.
                    self.tokens_expire = now + max(1.0, 2 * (granted * self.interval + max(0.0, self.next_at - now)))
                    # The server wrote its row between `sent` and `now` (nearer `now` on a busy server: the
                    # wait is for its database). Taking `now` errs late by the answer's way back, which
                    # costs that much; erring early is refused and costs up to a slot's decay (0.5 s at 2/s).
                    self.stored, self.written_at = self._active(now) + granted, now
                else:
                    # Refused: the server holds at least one slot more than reckoned (another worker's
                    # grants, or the call's time). Ask again when one more has decayed.
                    self.stored = max(self.stored, self.limit - self.batch + 1
                                      + math.floor(self.rate * (sent - self.written_at) + 1e-9))
                # The next batch is asked for as soon as the server has room for it, by its own arithmetic.
                room_in = (self.stored + self.batch - self.limit) / self.rate
                self.next_grant_at = self.written_at + max(0.0, room_in) + random.uniform(0.005, 0.015)
        return bool(granted)


def rate_batch_size(provider: ImageProvider) -> int:
    """Slots one Prefect grant covers: RATE_BATCH_SECONDS of budget."""
    return max(1, round(provider.requests_per_minute / 60.0 * RATE_BATCH_SECONDS))


def rate_limit_size(provider: ImageProvider) -> int:
    """The Prefect rate limit's `limit`: RATE_BATCHES_HELD batches."""
    return rate_batch_size(provider) * RATE_BATCHES_HELD


class JobSlotPool:
    """This process's share of the provider's global concurrency limit (jobs in flight).

    Measured (bench/provider_throughput.py): Prefect's `concurrency()` sends every
    acquisition for a limit through one queue per process, one HTTP call at a
    time, and a refused caller sleeps its Retry-After at the head of that queue:
    with 45 tasks the first wave waited 8–14 s (p50) for slots that were free.
    Asking per job directly was better, but each job still cost two writes to the
    same row of the server's database, and on SQLite under load a write took
    p50 ≈ 2 s. So the process takes slots from the server in batches (one lease
    per batch, `occupy=n`), hands them out locally, and gives a lease back as
    soon as the process no longer needs it (nothing running, or more than a
    batch to spare), so other workers get their share. Leases are short
    (JOB_LEASE_S) and renewed while a job is held (`keep_alive`); if this worker
    dies they expire and the server's repossessor frees the slots a minute or so
    later. (Prefect's ephemeral and test-harness servers do not run the
    repossessor: there a dead run's slots stay taken, which is why a job resumed
    from the journal takes no slot; see tasks/generate.py.)
    """

    _by_name: dict[str, "JobSlotPool"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, name: str, batch: int, lease_s: float):
        self.name = name
        self.batch = max(1, batch)
        self.lease_s = lease_s
        self.lock = threading.Lock()
        self.free = 0
        self.in_use = 0
        self.waiting = 0
        self.leader = False
        self.retry_at = 0.0
        self.leases: dict[str, list[float]] = {}  # lease id -> [slots, last renewed]

    @classmethod
    def for_provider(cls, provider: ImageProvider, lease_s: float) -> "JobSlotPool":
        batch = max(1, min(10, provider.max_concurrent_jobs // 4))
        with cls._registry_lock:
            pool = cls._by_name.get(provider.concurrency_limit_name)
            if pool is None or pool.batch != batch:
                pool = cls._by_name[provider.concurrency_limit_name] = JobSlotPool(
                    provider.concurrency_limit_name, batch, lease_s)
            pool.lease_s = max(pool.lease_s, lease_s)
            return pool

    async def _ask(self, n: int) -> tuple[str, int] | None:
        """One lease of n slots from the server (or 1 if n are not free); None when refused."""
        async with limits_client() as client:
            for want in ([n, 1] if n > 1 else [1]):
                try:
                    resp = await client.increment_concurrency_slots_with_lease(
                        names=[self.name], slots=want, mode="concurrency", lease_duration=self.lease_s)
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code in (423, 422):  # 422: more than the whole limit
                        continue
                    raise
                body = resp.json()
                if not body.get("limits"):
                    logger.warning("global concurrency limit %s does not exist; not limiting", self.name)
                    return f"unlimited-{random.random()}", want
                return str(body["lease_id"]), want
        return None

    async def acquire(self, counters: dict[str, float] | None = None) -> None:
        counted = False
        while True:
            lead = 0
            with self.lock:
                if self.free:
                    self.free -= 1
                    self.in_use += 1
                    if counted:
                        self.waiting -= 1
                    return
                if not counted:
                    self.waiting += 1
                    counted = True
                if not self.leader and time.monotonic() >= self.retry_at:
                    self.leader = True
                    lead = min(self.batch, self.waiting)
            if not lead:
                await asyncio.sleep(random.uniform(0.01, 0.03))
                continue
            if not await self._lease(lead) and counters is not None:
                counters["job_slot_denials"] = counters.get("job_slot_denials", 0) + 1

    async def prefetch(self) -> bool:
        """Lease a batch before anyone needs it (see `warm_up`); False when slots are in hand or asked for."""
        with self.lock:
            if self.free or self.leader:
                return False
            self.leader = True
        return await self._lease(self.batch)

    async def _lease(self, n: int) -> bool:
        """As the leader: one lease of up to n slots, its slots added to the free ones; False when refused."""
        got = None
        try:
            got = await self._ask(n)
        finally:
            with self.lock:
                self.leader = False
                if got is not None:
                    self.leases[got[0]] = [got[1], time.monotonic()]
                    self.free += got[1]
                else:
                    # Every slot is held (by us or other workers): look again shortly.
                    self.retry_at = time.monotonic() + random.uniform(0.05, 0.25)
        return got is not None

    async def give_back_idle(self) -> None:
        """Give back every lease when no job holds a slot (a catalog's end: slots warmed up but never used)."""
        with self.lock:
            if self.in_use:
                return
            give_back = list(self.leases)
            self.leases.clear()
            self.free = 0
        await self._send(give_back, [])

    def _due_for_renewal(self) -> list[str]:
        """Leases renewed longer than a third of their duration ago (marked renewed now); call under the lock."""
        now = time.monotonic()
        due = []
        for lease_id, entry in self.leases.items():
            if now - entry[1] > self.lease_s / 3:
                entry[1] = now
                due.append(lease_id)
        return due

    async def keep_alive(self) -> None:
        """Renew this process's leases while a job is held, so they can be short: a dead worker's
        slots come back a lease later (60 s, Prefect's minimum, plus its 15 s repossessor pass),
        not after the longest job's deadline (issue 11: a killed run blocked the provider 6 min)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            with self.lock:
                due = self._due_for_renewal()
            if due:
                await self._send(give_back=[], renew=due)

    async def release(self) -> None:
        give_back: list[str] = []
        renew: list[str] = []
        with self.lock:
            self.in_use -= 1
            self.free += 1
            for lease_id, (n, _) in sorted(self.leases.items(), key=lambda kv: kv[1][0]):
                if self.in_use == 0 or self.free - n >= self.batch:
                    self.free -= int(n)
                    give_back.append(lease_id)
            for lease_id in give_back:
                del self.leases[lease_id]
            renew = self._due_for_renewal()
        await self._send(give_back, renew)

    async def _send(self, give_back: list[str], renew: list[str]) -> None:
        if not (give_back or renew):
            return
        from uuid import UUID

        async with limits_client() as client:
            for lease_id in give_back:
                if lease_id.startswith("unlimited-"):
                    continue
                try:
                    await client.release_concurrency_slots_with_lease(lease_id=UUID(lease_id))
                except Exception as exc:  # noqa: BLE001 - the lease expires on its own
                    logger.warning("could not release %s lease %s: %s", self.name, lease_id, exc)
            for lease_id in renew:
                if lease_id.startswith("unlimited-"):
                    continue
                try:
                    await client.renew_concurrency_lease(lease_id=UUID(lease_id), lease_duration=self.lease_s)
                except Exception as exc:  # noqa: BLE001 - renewed again at the next pass
                    logger.warning("could not renew %s lease %s: %s", self.name, lease_id, exc)


@asynccontextmanager
async def job_slot(provider: ImageProvider, *, lease_s: float,
                   counters: dict[str, float] | None = None) -> AsyncIterator[None]:
    """Hold one slot of the provider's global concurrency limit while the body runs (see JobSlotPool)."""
    pool = JobSlotPool.for_provider(provider, lease_s)
    asked = time.monotonic()
    await pool.acquire(counters)
    if counters is not None:
        counters["job_slot_call_s"] = round(time.monotonic() - asked, 4)
    renewer = asyncio.create_task(pool.keep_alive())
    try:
        yield
    finally:
        renewer.cancel()
        try:
            await renewer
        except BaseException:  # noqa: BLE001 - cancelled on purpose; a failed renewal is retried by the next one
            pass
        await pool.release()


async def rate_slots(provider: ImageProvider, n: int, *, pace: bool = True) -> int:
    """Ask the server for n slots of the provider's rate limit at once: n when granted, 0 when refused
    (without `pace`, after sleeping the server's Retry-After, as Prefect's own client does)."""
    async with limits_client() as client:
        try:
            await client.increment_concurrency_slots(names=[provider.rate_limit_name], slots=n, mode="rate_limit")
            return n
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 422 and n > 1:
                # The limit was set smaller than our batch (another worker's settings): ask for one.
                return await rate_slots(provider, 1, pace=pace)
            if exc.response.status_code != 423:
                raise
            if not pace:
                await asyncio.sleep(float(exc.response.headers.get("Retry-After", "0.5")))
            return 0


async def warm_provider_limits(provider: ImageProvider) -> None:
    """Before a catalog's first asset: the provider's limits exist, and the first batch of rate slots
    and a lease of job slots are in hand. Measured: the first submission came 2.1–3.5 s after the run
    started, 0.4 s of it setting the limits, 0.4 s the first grant and 1.5 s the first lease, all
    behind the first assets' load and plan."""
    if provider.uses_shared_limits:
        await ensure_provider_limits(provider)
        await SubmitPacer.for_provider(provider).prefetch(lambda n: rate_slots(provider, n))
        await JobSlotPool.for_provider(provider, JOB_LEASE_S).prefetch()


def warm_up(provider: ImageProvider, wait_s: float = 2.0) -> None:
    """`warm_provider_limits` before the first assets start, waiting for it at most `wait_s`.

    Before, not beside: run beside the first assets, the first grant took 1.9 s (the server was busy
    recording their task runs); before them it takes a few tens of ms. A failure is only logged (the
    generate stage sets the limits itself and says what went wrong), and past `wait_s` it goes on alone.
    `cool_down` gives back the lease if no job used it."""
    if provider.uses_shared_limits:
        run_on_thread(warm_provider_limits(provider), f"warm {provider.provider_name}'s limits", wait_s)


def cool_down(provider: ImageProvider, wait_s: float = 5.0) -> None:
    """At a catalog's end: job slots this process leased and holds for no job go back to the server now,
    not when their lease runs out (other workers may be waiting for them)."""
    if provider.uses_shared_limits:
        run_on_thread(JobSlotPool.for_provider(provider, JOB_LEASE_S).give_back_idle(),
                      f"give back {provider.provider_name}'s idle job slots", wait_s)


def run_on_thread(work: Awaitable[None], what: str, wait_s: float) -> None:
    """Run `work` on a thread of its own for at most `wait_s`; a failure is logged, never raised."""
    async def guarded() -> None:
        try:
            await work
        except Exception as exc:  # noqa: BLE001 - an optimisation, never the run's failure
            logger.warning("could not %s: %s", what, exc)

    # With the caller's context: Prefect's settings (which API) live in context variables.
    thread = threading.Thread(target=contextvars.copy_context().run, args=(asyncio.run, guarded()), name=what, daemon=True)
    thread.start()
    thread.join(wait_s)


async def take_submit_slot(provider: ImageProvider, *, pace: bool = True, space: bool = True,
                           counters: dict[str, float] | None = None) -> None:
    """One slot of the provider's shared requests-per-minute budget (a Prefect global rate limit).

    With `pace` (the default) slots come through the process's SubmitPacer;
    without it, each call asks the server for one slot and sleeps the server's
    Retry-After when refused — Prefect's own behaviour, kept for the benchmark's
    comparison.
    """
    def acquire(n: int) -> Awaitable[int]:
        return rate_slots(provider, n, pace=pace)

    started = time.monotonic()
    if pace:
        pacer = SubmitPacer.for_provider(provider)
        refusals = await pacer.take(acquire)
        if space:
            # Space the sends after the slot is in hand: slots arrive in batches, requests must not.
            await pacer.wait_turn()
    else:
        refusals = 0
        while not await acquire(1):
            refusals += 1
    if counters is not None:
        counters["rate_denials"] = counters.get("rate_denials", 0) + refusals
        counters["rate_slot_s"] = round(time.monotonic() - started, 4)
