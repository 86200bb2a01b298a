"""Generate: submit a request to the client's provider, wait, and bring the images home.

Order of things for one job:

1. hold a slot of the provider's global concurrency limit (jobs in flight,
   shared by every worker through the Prefect server);
2. take a slot of its global rate limit (requests per minute) before each
   job-creating call, and submit; 429 waits for `Retry-After`, 5xx / timeouts /
   dropped connections back off exponentially with jitter; refusals
   (`Rejected`: validation, content filter) end the job at once;
3. wait webhook-first: listen for the `brandforge.generation.completed` /
   `.failed` event the webhook gateway relays (resource
   `brandforge.job.<provider>.<job id>`), and poll the provider meanwhile on a
   backoff up to a deadline, so a lost webhook costs latency, never the job; an
   event only wakes the wait, the provider's own status decides, so a
   duplicated or forged event can do no harm;
4. download the outputs at once (hosted providers delete them), validate them
   (they decode, their size, their count) and write them to the work folder.

A job that outlives the deadline stays known to this process: a Prefect retry
of the task resumes waiting for the same job instead of paying for a new one.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from PIL import Image
from prefect import task
from prefect.exceptions import ObjectAlreadyExists

from blocks.providers.base import ImageProvider
from models import (
    GenerationRequest,
    GenerationResult,
    JobHandle,
    JobState,
    JobStatus,
    RateLimited,
    Rejected,
    Transient,
    stable_hash,
)
from tasks.retry import is_retryable

logger = logging.getLogger("brandforge.generate")
T = TypeVar("T")

COMPLETED_EVENT = "brandforge.generation.completed"
FAILED_EVENT = "brandforge.generation.failed"
MAX_OUTPUT_PIXELS = 40_000_000  # larger is a decompression bomb, not a marketing image

# Jobs submitted by this process and not yet brought home, by request key: a retry resumes them.
_IN_FLIGHT: dict[str, JobHandle] = {}
# GCLs already created/updated by this process, with the values they were set to.
_LIMITS_SET: dict[tuple[str, str], tuple[int, float]] = {}
_LIMITS_LOCK = threading.Lock()


# --------------------------------------------------------------------------- validation


def validate_outputs(images: list[bytes], request: GenerationRequest, provider: str) -> list[Image.Image]:
    """Decoded outputs; a corrupt, missing or tiny image is a Transient error (a re-download or retry may fix it)."""
    if not images:
        raise Transient("provider returned no images", provider=provider)
    if len(images) < request.batch_size:
        raise Transient(f"provider returned {len(images)} images, {request.batch_size} were asked for", provider=provider)
    images = images[: request.batch_size]
    decoded = []
    for i, data in enumerate(images):
        try:
            probe = Image.open(io.BytesIO(data))
            if probe.width * probe.height > MAX_OUTPUT_PIXELS:
                raise Rejected(f"output {i} is {probe.width}x{probe.height}, over {MAX_OUTPUT_PIXELS} pixels", provider=provider)
            probe.load()
        except Rejected:
            raise
        except Exception as exc:  # noqa: BLE001 - every decoder failure means the same thing
            raise Transient(f"output {i} does not decode as an image: {exc}", provider=provider) from exc
        if min(probe.size) < 32:
            raise Transient(f"output {i} is only {probe.width}x{probe.height}", provider=provider)
        decoded.append(probe)
    return decoded


# --------------------------------------------------------------------------- retries


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter (between half and all of base·2^attempt), so workers spread out."""
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    provider: str,
    what: str,
    attempts: int = 6,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    before_each: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run `call`, retrying `RateLimited` after its Retry-After and `Transient` on a jittered backoff."""
    for attempt in range(attempts):
        if before_each is not None:
            await before_each()
        try:
            return await call()
        except RateLimited as exc:
            if attempt == attempts - 1:
                raise
            wait = exc.retry_after if exc.retry_after is not None else backoff_delay(attempt, base_delay, max_delay)
            logger.info("%s %s: rate limited, retrying in %.2fs", provider, what, wait)
        except Transient as exc:
            if attempt == attempts - 1:
                raise
            wait = backoff_delay(attempt, base_delay, max_delay)
            logger.info("%s %s: %s; retrying in %.2fs", provider, what, exc.reason, wait)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- shared limits


async def ensure_provider_limits(provider: ImageProvider) -> None:
    """Create (or update) the provider's global rate and concurrency limits on the Prefect server.

    Rate limit: `limit` = one batch (RATE_BATCH_SECONDS of budget), slots decay at rpm/60 per
    second, so no window of t seconds sees more than limit + rpm/60·t grants across all workers.
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


RATE_BATCH_SECONDS = 2.0  # how much of the budget one Prefect grant covers (see SubmitPacer)


class SubmitPacer:
    """Process-wide pacing and batched slot-taking in front of Prefect's global rate limit.

    What was measured (bench/provider_throughput.py, 2 shared cores, SQLite
    server) and why this exists:

    - Prefect's server decays a rate limit by floor(decay/s × seconds since the
      row was last *written*), and every grant and every refusal writes the row.
      Callers arriving faster than one per 1/decay seconds, with any jitter,
      therefore lose most of the decay: slots stop freeing, callers are refused
      (423) and sleep a Retry-After that grows with each refusal. One slot per
      request at 10/s reached 0.23–0.48 of the limit.
    - The client's `rate_limit()` also funnels every acquisition through one
      queue per process, one HTTP call at a time, capping grants at 1/RTT.

    So this process takes slots in batches — `occupy=n` for up to
    RATE_BATCH_SECONDS of budget, no sooner than n/rate after its last grant
    (plus 2 %), when a floor() can no longer eat a slot — and hands them out
    locally, one per `interval`, so requests still leave evenly spaced. The
    Prefect limit stays the authority across workers; this is the smallest
    addition that closes the gap. Thread-safe and loop-free, because Prefect
    runs async tasks on several threads, each with its own event loop.
    """

    _by_name: dict[str, "SubmitPacer"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, per_second: float, batch: int):
        self.rate = per_second
        self.interval = 1.0 / per_second
        self.batch = max(1, batch)
        self.next_at = 0.0  # next send time handed out
        self.lock = threading.Lock()
        self.tokens = 0  # Prefect slots granted to this process, not yet used
        self.tokens_expire = 0.0
        self.waiting = 0
        self.leader = False
        self.next_grant_at = 0.0

    @classmethod
    def for_provider(cls, provider: ImageProvider) -> "SubmitPacer":
        rate = provider.requests_per_minute / 60.0
        batch = rate_limit_size(provider)
        with cls._registry_lock:
            pacer = cls._by_name.get(provider.rate_limit_name)
            if pacer is None or abs(pacer.rate - rate) > 1e-9 or pacer.batch != batch:
                pacer = cls._by_name[provider.rate_limit_name] = SubmitPacer(rate, batch)
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

    async def take(self, acquire: Callable[[int], Awaitable[bool]]) -> int:
        """One Prefect slot for this caller; `acquire(n)` asks the server for n at once. Returns refusals seen."""
        refusals = 0
        counted = False
        while True:
            lead = 0
            with self.lock:
                now = time.monotonic()
                if self.tokens and now > self.tokens_expire:
                    self.tokens = 0  # granted too long ago: their budget has passed
                if self.tokens:
                    self.tokens -= 1
                    if counted:
                        self.waiting -= 1
                    return refusals
                if not counted:
                    self.waiting += 1
                    counted = True
                if not self.leader and now >= self.next_grant_at:
                    self.leader = True
                    lead = min(self.batch, self.waiting)
                pause = max(0.005, min(0.05, self.next_grant_at - now))
            if not lead:
                await asyncio.sleep(pause)
                continue
            granted = False
            try:
                granted = await acquire(lead)
            finally:
                with self.lock:
                    self.leader = False
                    now = time.monotonic()
                    if granted:
                        self.tokens += lead
                        self.tokens_expire = now + max(1.0, 2 * lead * self.interval)
                        self.next_grant_at = now + lead * self.interval * 1.02
                    else:
                        refusals += 1
                        # Another worker holds the budget: try again after one slot's worth of decay.
                        self.next_grant_at = now + self.interval * random.uniform(1.0, 2.0)


def rate_limit_size(provider: ImageProvider) -> int:
    """The Prefect rate limit's `limit`: one batch of RATE_BATCH_SECONDS of budget."""
    return max(1, round(provider.requests_per_minute / 60.0 * RATE_BATCH_SECONDS))


@asynccontextmanager
async def job_slot(provider: ImageProvider, *, lease_s: float,
                   counters: dict[str, float] | None = None) -> AsyncIterator[None]:
    """Hold one slot of the provider's global concurrency limit (jobs in flight) while the body runs.

    Measured (bench/provider_throughput.py): Prefect's `concurrency()` sends every
    acquisition for a limit through one queue per process, one HTTP call at a
    time, and a refused caller sleeps its Retry-After at the head of that queue,
    so with tens of tasks the first wave alone waited 10+ s for free slots. Here
    each task asks the same server-side limit directly and sleeps its own
    (jittered) Retry-After. The lease outlives the job's deadline, so no renewal
    thread is needed; if this worker dies, the lease expires and frees the slot.
    """
    import httpx
    from prefect.client.orchestration import get_client

    lease_id = None
    async with get_client() as client:
        while True:
            try:
                asked = time.monotonic()
                resp = await client.increment_concurrency_slots_with_lease(
                    names=[provider.concurrency_limit_name], slots=1, mode="concurrency", lease_duration=lease_s)
                if counters is not None:
                    counters["job_slot_call_s"] = round(time.monotonic() - asked, 4)
                break
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:
                    raise
                if counters is not None:
                    counters["job_slot_denials"] = counters.get("job_slot_denials", 0) + 1
                # The server's Retry-After grows with every refusal (up to 30 s) although a slot
                # may free any moment; a short, jittered wait keeps the cap busy.
                wait = float(exc.response.headers.get("Retry-After", "1"))
                await asyncio.sleep(min(wait, 2.0) * random.uniform(0.5, 1.0))
        body = resp.json()
        if body.get("limits"):
            lease_id = body.get("lease_id")
        else:
            logger.warning("global concurrency limit %s does not exist; not limiting", provider.concurrency_limit_name)
    try:
        yield
    finally:
        if lease_id is not None:
            async with get_client() as client:
                try:
                    await client.release_concurrency_slots_with_lease(lease_id=lease_id)
                except Exception as exc:  # noqa: BLE001 - the lease expires on its own
                    logger.warning("could not release %s lease %s: %s", provider.concurrency_limit_name, lease_id, exc)


async def take_submit_slot(provider: ImageProvider, *, pace: bool = True, space: bool = True,
                           counters: dict[str, float] | None = None) -> None:
    """One slot of the provider's shared requests-per-minute budget (a Prefect global rate limit).

    With `pace` (the default) slots come through the process's SubmitPacer;
    without it, each call asks the server for one slot and sleeps the server's
    Retry-After when refused — Prefect's own behaviour, kept for the benchmark's
    comparison.
    """
    import httpx
    from prefect.client.orchestration import get_client

    async def acquire(n: int) -> bool:
        async with get_client() as client:
            try:
                await client.increment_concurrency_slots(names=[provider.rate_limit_name], slots=n, mode="rate_limit")
                return True
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:
                    raise
                if not pace:
                    wait = float(exc.response.headers.get("Retry-After", "0.5"))
                    await asyncio.sleep(wait)
                return False

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


# --------------------------------------------------------------------------- waiting


@asynccontextmanager
async def job_events(provider: ImageProvider, handle: JobHandle, enabled: bool) -> AsyncIterator[asyncio.Event]:
    """An asyncio.Event set when a `brandforge.generation.*` event for this job reaches Prefect.

    The subscriber backfills the last minute on connect, so an event relayed
    before we started listening still wakes us. Without a reachable event
    stream this quietly degrades to polling.
    """
    woke = asyncio.Event()
    if not enabled:
        yield woke
        return

    async def listen() -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

        flt = EventFilter(event=EventNameFilter(name=[COMPLETED_EVENT, FAILED_EVENT]),
                          resource=EventResourceFilter(id=[provider.job_resource_id(handle.job_id)]))
        try:
            async with get_events_subscriber(filter=flt, reconnection_attempts=3) as sub:
                async for event in sub:
                    logger.info("%s: event %s for job %s", provider.provider_name, event.event, handle.job_id)
                    woke.set()
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the event stream is an accelerator, polling still runs
            logger.warning("event stream unavailable (%s); polling only", exc)

    listener = asyncio.create_task(listen())
    try:
        yield woke
    finally:
        listener.cancel()
        try:
            await listener
        except BaseException:  # noqa: BLE001 - it was cancelled on purpose
            pass


async def wait_for_job(
    provider: ImageProvider,
    handle: JobHandle,
    *,
    poll_every: float,
    deadline_s: float,
    listen: bool = True,
    counters: dict[str, float] | None = None,
) -> JobStatus:
    """Until the job finishes (event or poll) or the deadline passes (the job id is in the error).

    `counters` (if given) receives how many polls ran and how many events woke the wait."""
    counters = counters if counters is not None else {}
    counters.setdefault("polls", 0)
    counters.setdefault("events", 0)
    started = time.monotonic()
    listening = listen and provider.supports_webhooks and bool(getattr(provider, "webhook_url", None))
    # Polling is the fallback when a webhook is coming; without one, start quick and back off.
    delay = poll_every if listening else min(0.25, poll_every)
    failures = 0
    async with job_events(provider, handle, listening) as woke:
        while True:
            try:
                counters["polls"] += 1
                status = await provider.status(handle)
                failures = 0
            except (RateLimited, Transient) as exc:
                failures += 1
                if failures >= 6:
                    raise
                status = None
                logger.info("%s status of %s: %s", provider.provider_name, handle.job_id, exc)
            if status is not None and status.state == JobState.succeeded:
                return status
            if status is not None and status.state in (JobState.failed, JobState.canceled):
                raise Rejected(f"{provider.provider_name}: {status.error or 'job ' + status.state.value}",
                               provider=provider.provider_name)
            remaining = deadline_s - (time.monotonic() - started)
            if remaining <= 0:
                raise Transient(f"{provider.provider_name} job {handle.job_id} not finished after {deadline_s:.0f}s; "
                                "a retry resumes it", provider=provider.provider_name)
            try:
                await asyncio.wait_for(woke.wait(), timeout=min(delay, remaining))
                woke.clear()
                counters["events"] += 1
            except asyncio.TimeoutError:
                delay = min(delay * 2, poll_every)


def request_key(provider: ImageProvider, request: GenerationRequest) -> str:
    return stable_hash({"provider": provider.limit_name, "model": provider.model, "request": request.model_dump()})


async def run_generation(
    request: GenerationRequest,
    provider: ImageProvider,
    *,
    poll_every: float = 5.0,
    deadline_s: float = 120.0,
    listen: bool = True,
    attempts: int = 6,
    base_delay: float = 0.5,
    use_limits: bool = True,
    pace: bool = True,
) -> tuple[JobHandle, list[Image.Image], dict[str, float]]:
    """Submit (or resume), wait and download one job: the task's body, callable from benchmarks."""
    started = time.monotonic()
    provider.check_supported(request)
    key = request_key(provider, request)
    timings: dict[str, float] = {}
    use_limits = use_limits and provider.uses_shared_limits
    if use_limits:
        await ensure_provider_limits(provider)
    timings["limits_setup_s"] = round(time.monotonic() - started, 4)
    name = provider.provider_name
    hold = job_slot(provider, lease_s=max(300.0, deadline_s * 2 + 120), counters=timings) if use_limits else _nothing()
    submitted = time.monotonic()
    have_rate_slot = False

    async def slot() -> None:
        nonlocal submitted, have_rate_slot
        if have_rate_slot:  # taken before the job slot; only its send time is left to wait for
            have_rate_slot = False
            if pace:
                await SubmitPacer.for_provider(provider).wait_turn()
        else:
            await take_submit_slot(provider, pace=pace, counters=timings)
        submitted = time.monotonic()  # the provider call starts now; what came before was queueing

    if use_limits and _IN_FLIGHT.get(key) is None:
        # Queue for the request budget first, then for a job slot: holding a job slot while
        # waiting in the budget's line would idle the concurrency cap (measured by the bench).
        queued = time.monotonic()
        await take_submit_slot(provider, pace=pace, space=False, counters=timings)
        timings["rate_slot_wait_s"] = round(time.monotonic() - queued, 4)
        have_rate_slot = True
    before_hold = time.monotonic()
    async with hold:
        timings["job_slot_wait_s"] = round(time.monotonic() - before_hold, 4)

        # A synchronous provider's answer is its output: if that is corrupt, only a new request helps.
        for round_ in range(attempts):
            handle = _IN_FLIGHT.get(key)
            if handle is None:
                handle = await call_with_retries(
                    lambda: provider.submit(request), provider=name, what="submit", attempts=attempts,
                    base_delay=base_delay, before_each=slot if use_limits else None,
                )
                _IN_FLIGHT[key] = handle
                logger.info("%s job %s submitted", name, handle.job_id)
            await wait_for_job(provider, handle, poll_every=poll_every, deadline_s=deadline_s, listen=listen,
                               counters=timings)

            async def fetch_valid() -> list[Image.Image]:
                return validate_outputs(await provider.fetch(handle), request, name)

            synchronous = bool(handle.extra.get("synchronous"))
            try:
                images = await call_with_retries(fetch_valid, provider=name, what="fetch",
                                                 attempts=1 if synchronous else attempts, base_delay=base_delay)
                break
            except Transient:
                if not synchronous or round_ == attempts - 1:
                    raise
                _IN_FLIGHT.pop(key, None)
                logger.info("%s job %s gave unusable output; asking again", name, handle.job_id)
        _IN_FLIGHT.pop(key, None)
        done = time.monotonic()
        timings["submit_to_image_s"] = round(done - submitted, 4)
        timings["total_s"] = round(done - started, 4)
    return handle, images, timings


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


async def retry_if_retryable(task, task_run, state) -> bool:
    """Async `retry_condition_fn`: on an async task `state.result()` is a coroutine, so await it."""
    try:
        await state.aresult()
    except BaseException as exc:  # noqa: BLE001 - classified, not swallowed
        return is_retryable(exc)
    return False


# In-call retries (call_with_retries) handle 429/5xx/timeouts; a task retry is for what
# outlives them (a job past its deadline is resumed, not paid for again).
@task(
    name="generate-images",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_if_retryable,
)
async def generate_images(
    request: GenerationRequest,
    provider: ImageProvider,
    out_dir: str,
    poll_every: float = 5.0,
    deadline_s: float = 120.0,
) -> GenerationResult:
    """Run one generation and write its images as PNGs under `out_dir`."""
    started = time.monotonic()
    handle, images, _ = await run_generation(request, provider, poll_every=poll_every, deadline_s=deadline_s)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"raw-{i}.png"
        img.save(path, format="PNG")
        paths.append(str(path.resolve()))
    return GenerationResult(
        images=paths, provider=provider.provider_name, model=provider.model, job_ids=[handle.job_id],
        seed=request.seed, cost_usd=round(provider.price_per_image_usd * len(paths), 6),
        seconds=round(time.monotonic() - started, 3),
    )
