"""Generate: submit a request to the client's provider, wait, and bring the images home.

Order of things for one job:

1. take a slot of the provider's global rate limit (requests per minute, shared
   by every worker through the Prefect server), then a slot of its global
   concurrency limit (jobs in flight), held until the images are home;
2. submit (every retry takes a new rate slot); 429 waits for `Retry-After`, 5xx / timeouts /
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

Every paid job is journalled in the client's ledger (`JobAccount`): its price is
reserved against the run's and the month's budget before it is submitted (an
atomic check in the database, so workers cannot overspend together), and the
job id is on record the moment the provider accepts it. A job that outlives the
deadline, or whose worker died, is resumed from that record by the next attempt
(a Prefect retry or a rerun, in any process) instead of being paid for again.
A submission whose answer never came back (a timeout after the provider made the
job, a worker killed before it wrote the id down) is looked up at a provider that
lists its jobs (`find_job`) before anything is submitted again.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from PIL import Image
from prefect import task
from prefect.cache_policies import NO_CACHE

from brandforge.blocks.ledger import JobRecord, Ledger
from brandforge.blocks.providers.base import ImageProvider
from brandforge.models import (
    GENERATION_COMPLETED_EVENT,
    GENERATION_FAILED_EVENT,
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
from brandforge.tasks.abandoned_runs import crash_abandoned_run
from brandforge.tasks.generation_store import GenerationStore, write_outputs_verbatim
from brandforge.tasks.cpu import cpu_slot
from brandforge.tasks.provider_limits import JOB_LEASE_S, SubmitPacer, ensure_provider_limits, job_slot, take_submit_slot
from brandforge.tasks.retry import retry_transient_only

logger = logging.getLogger("brandforge.generate")
T = TypeVar("T")

COMPLETED_EVENT = GENERATION_COMPLETED_EVENT
FAILED_EVENT = GENERATION_FAILED_EVENT
MAX_OUTPUT_PIXELS = 40_000_000  # larger is a decompression bomb, not a marketing image

# Jobs submitted by this process and not yet brought home, by request key, for callers without
# a JobAccount (provider benchmarks): a retry in this process resumes them.
_IN_FLIGHT: dict[str, JobHandle] = {}


@dataclass(frozen=True)
class JobAccount:
    """Whose money a job spends and where it is journalled: the client's ledger, budgets and run."""

    ledger: Ledger
    client: str
    run_key: str | None = None
    generation_key: str | None = None
    source_uri: str | None = None
    run_budget_usd: float | None = None
    monthly_budget_usd: float | None = None
    flow_run_id: str | None = None

    def resumable(self, key: str) -> JobRecord | None:
        job = self.ledger.open_job(self.client, key)
        return job if job and job.handle else None

    def reserve(self, provider: ImageProvider, key: str, amount: float) -> int:
        """Hold the job's price (BudgetExceeded when the run or the month cannot afford it)."""
        return self.ledger.reserve_job(
            client=self.client, provider=provider.provider_name, model=provider.model, amount=amount, request_key=key,
            generation_key=self.generation_key, source_uri=self.source_uri, run_key=self.run_key,
            run_budget_usd=self.run_budget_usd, monthly_budget_usd=self.monthly_budget_usd, flow_run_id=self.flow_run_id,
        )


# --------------------------------------------------------------------------- validation


class UnusableOutput(Transient):
    """A job's outputs are corrupt, missing or tiny: a re-download may fix it; if every one fails, the job is
    over (a resumed job would give the same bytes again) and the next attempt submits a new one."""


def validate_outputs(images: list[bytes], request: GenerationRequest, provider: str) -> list[Image.Image]:
    """Decoded outputs; a corrupt, missing or tiny image is UnusableOutput (a re-download or retry may fix it)."""
    if not images:
        raise UnusableOutput("provider returned no images", provider=provider)
    if len(images) < request.batch_size:
        raise UnusableOutput(f"provider returned {len(images)} images, {request.batch_size} were asked for", provider=provider)
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
            raise UnusableOutput(f"output {i} does not decode as an image: {exc}", provider=provider) from exc
        if min(probe.size) < 32:
            raise UnusableOutput(f"output {i} is only {probe.width}x{probe.height}", provider=provider)
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


class PollSchedule:
    """When to ask a provider about a job: soon after it is likely done, learned from its recent jobs.

    Measured (bench/catalog_provider.py, L = 5 s): a fixed backoff (0.25, 0.5, 1,
    2, 4 s) first saw a 5 s job done at 7.75 s, and every asset paid those 2.8 s
    while holding a job slot. With the provider's recent job times (process-wide,
    per provider account and model) the wait sleeps to 80 % of the median, then polls every tenth of
    it (0.25–2 s) until twice the median, then backs off. Before there is a history (a catalog's
    first wave of jobs) the next poll comes after a fifth of the time waited so far, so a job is
    seen at most ~20 % late (5.4 s for a 5 s job, not 7.75 s), and the history is looked at again
    at every poll: the first jobs to finish teach the others still waiting.
    """

    _recent: dict[str, "deque[float]"] = {}
    _lock = threading.Lock()

    def __init__(self, provider: str, poll_every: float):
        self.provider = provider
        self.poll_every = poll_every
        self.delay = min(0.25, poll_every)
        self.expected = self._median()

    def _median(self) -> float | None:
        with self._lock:
            seen = sorted(self._recent.get(self.provider, ()))
        return seen[len(seen) // 2] if len(seen) >= 3 else None  # one or two jobs may be outliers

    def next_delay(self, elapsed: float) -> float:
        """Seconds to wait before the next poll, `elapsed` seconds after the job was submitted."""
        if self.expected is None:
            self.expected = self._median()
        if self.expected is None:
            return min(self.poll_every, max(self.delay, elapsed / 5))
        step = min(self.poll_every, max(0.25, min(2.0, self.expected / 10)))
        if elapsed < 0.8 * self.expected:
            return 0.8 * self.expected - elapsed
        if elapsed < 2 * self.expected:
            return step
        self.delay = max(self.delay, step)  # slower than usual: back off from there
        delay, self.delay = self.delay, min(self.delay * 2, self.poll_every)
        return delay

    @classmethod
    def record(cls, provider: str, seconds: float) -> None:
        with cls._lock:
            cls._recent.setdefault(provider, deque(maxlen=32)).append(seconds)


async def wait_for_job(
    provider: ImageProvider,
    handle: JobHandle,
    *,
    poll_every: float,
    deadline_s: float,
    listen: bool = True,
    counters: dict[str, float] | None = None,
    learn: bool = True,
) -> JobStatus:
    """Until the job finishes (event or poll) or the deadline passes (the job id is in the error).

    `counters` (if given) receives how many polls ran and how many events woke the wait; `learn`
    (a job submitted just now, not one resumed) adds its time to the provider's PollSchedule."""
    counters = counters if counters is not None else {}
    counters.setdefault("polls", 0)
    counters.setdefault("events", 0)
    started = time.monotonic()
    listening = listen and provider.supports_webhooks and bool(getattr(provider, "webhook_url", None))
    # Polling is the fallback when a webhook is coming; without one, poll when the job is likely done.
    # One history per provider account and model: models of one provider differ in speed.
    schedule = None if listening else PollSchedule(f"{provider.limit_name}/{provider.model}", poll_every)
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
                if learn:
                    PollSchedule.record(f"{provider.limit_name}/{provider.model}", time.monotonic() - started)
                return status
            if status is not None and status.state in (JobState.failed, JobState.canceled):
                raise Rejected(f"{provider.provider_name}: {status.error or 'job ' + status.state.value}",
                               provider=provider.provider_name)
            remaining = deadline_s - (time.monotonic() - started)
            if remaining <= 0:
                raise Transient(f"{provider.provider_name} job {handle.job_id} not finished after {deadline_s:.0f}s; "
                                "a retry resumes it", provider=provider.provider_name)
            delay = poll_every if schedule is None else schedule.next_delay(time.monotonic() - started)
            try:
                await asyncio.wait_for(woke.wait(), timeout=min(delay, remaining))
                woke.clear()
                counters["events"] += 1
            except asyncio.TimeoutError:
                pass


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
    account: JobAccount | None = None,
    keep: Callable[[JobHandle, list[bytes]], object] | None = None,
) -> tuple[JobHandle, list[Image.Image], dict[str, float]]:
    """Submit (or resume), wait and download one job: the task's body, callable from benchmarks.

    With an `account`, the job is journalled in its ledger (reserved, accepted, finished) and an
    accepted job of the same request is resumed from there; without one (benchmarks of a provider
    alone), only this process remembers it. `keep(handle, files)` stores the outputs (the provider's bytes) before the
    job is marked finished, so no crash leaves a finished job whose images are nowhere."""
    started = time.monotonic()
    provider.check_request(request)
    key = request_key(provider, request)
    timings: dict[str, float] = {}
    use_limits = use_limits and provider.uses_shared_limits
    if use_limits:
        await ensure_provider_limits(provider)
    timings["limits_setup_s"] = round(time.monotonic() - started, 4)
    name = provider.provider_name
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

    # With an account, the ledger's journal is the memory of jobs in flight (shared by every worker,
    # scoped to the client); without one, this process's.
    inflight: dict[str, JobHandle] = {} if account is not None else _IN_FLIGHT
    journal_id: int | None = None
    if account is not None and (open_job := account.resumable(key)):
        journal_id, inflight[key] = open_job.id, open_job.handle  # type: ignore[assignment]
        logger.info("%s job %s resumed from the ledger's journal", name, open_job.job_id)
        if open_job.flow_run_id != account.flow_run_id:
            await crash_abandoned_run(open_job.flow_run_id, account.flow_run_id)
    # A dead run's submission that was never answered may have made a job: found at the provider, it is resumed.
    if account is not None and journal_id is None and provider.lists_jobs and (
            found := await adopt_unanswered(provider, request, account, key)):
        journal_id, inflight[key] = found
    # A job resumed from the journal takes no job slot: it is in flight at the provider already, and
    # the slot it was counted under is its dead run's lease, which expires on its own (a rerun after
    # a crash must not queue behind its own jobs; issue 11 measured 6 minutes of that).
    hold = job_slot(provider, lease_s=JOB_LEASE_S, counters=timings) if use_limits and journal_id is None else _nothing()
    price = provider.price_per_image_usd * request.batch_size

    if use_limits and inflight.get(key) is None:
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
            handle = inflight.get(key)
            fresh = handle is None  # submitted now: its wait says how long this provider's jobs take
            if handle is None:
                journal_id = account.reserve(provider, key, price) if account is not None else None
                try:
                    handle = await call_with_retries(
                        submit_or_find(provider, request, account, key), provider=name, what="submit",
                        attempts=attempts, base_delay=base_delay, before_each=slot if use_limits else None,
                    )
                except BaseException as exc:
                    if journal_id is not None:  # the provider never gave us a job: nothing was spent
                        account.ledger.job_released(journal_id, f"submit: {type(exc).__name__}: {exc}")
                    raise
                if journal_id is not None:
                    journal_id = account.ledger.job_accepted(journal_id, handle, price)
                inflight[key] = handle
                logger.info("%s job %s submitted", name, handle.job_id)
            try:
                await wait_for_job(provider, handle, poll_every=poll_every, deadline_s=deadline_s, listen=listen,
                                   counters=timings, learn=fresh)
            except Rejected as exc:  # the provider failed the job: it is over, a new attempt submits anew
                inflight.pop(key, None)
                if journal_id is not None:
                    account.ledger.job_finished(journal_id, succeeded=False, reason=str(exc))
                raise

            raw: list[bytes] = []  # the files as the provider sent them, for `keep`

            async def fetch_valid() -> list[Image.Image]:
                raw[:] = await provider.fetch(handle)
                return validate_outputs(raw, request, name)

            synchronous = bool(handle.extra.get("synchronous"))
            try:
                images = await call_with_retries(fetch_valid, provider=name, what="fetch",
                                                 attempts=1 if synchronous else attempts, base_delay=base_delay)
                break
            except UnusableOutput as exc:
                inflight.pop(key, None)
                if journal_id is not None:
                    account.ledger.job_finished(journal_id, succeeded=False, reason=f"unusable output: {exc.reason}")
                if not synchronous or round_ == attempts - 1:
                    raise
                logger.info("%s job %s gave unusable output; asking again", name, handle.job_id)
        if keep is not None:
            keep(handle, raw[: len(images)])
        inflight.pop(key, None)
        if journal_id is not None:
            account.ledger.job_finished(journal_id, succeeded=True)
        done = time.monotonic()
        timings["submit_to_image_s"] = round(done - submitted, 4)
        timings["total_s"] = round(done - started, 4)
    return handle, images, timings


# How far before a submission a provider's job list is searched (the provider's clock is not ours).
CLOCK_SKEW_S = 300.0


def submit_or_find(provider: ImageProvider, request: GenerationRequest, account: JobAccount | None,
                   key: str) -> Callable[[], Awaitable[JobHandle]]:
    """One submission's attempts: the first submits; a later one (the previous answer was a timeout or
    an error, maybe sent after the provider made the job) first looks for the job at the provider."""
    since = datetime.now(timezone.utc) - timedelta(seconds=CLOCK_SKEW_S)
    known = frozenset(account.ledger.known_job_ids(account.client, key)) if account is not None else frozenset()
    tries = 0

    async def attempt() -> JobHandle:
        nonlocal tries
        tries += 1
        if tries > 1 and provider.lists_jobs and (found := await provider.find_job(request, since, known)) is not None:
            logger.info("%s job %s was made by an unanswered submission: resumed, not submitted again",
                        provider.provider_name, found.job_id)
            return found
        return await on_this_machine(provider, provider.submit(request))

    return attempt


async def adopt_unanswered(provider: ImageProvider, request: GenerationRequest, account: JobAccount,
                           key: str) -> tuple[int, JobHandle] | None:
    """A job that a dead run submitted but never wrote down (its reservation has no job id): found at
    the provider, it goes on record on that reservation and is resumed; not there, the reservation
    is released (nothing was billed for it). Returns (journal row, handle) of the job to resume."""
    known = frozenset(account.ledger.known_job_ids(account.client, key))
    for row in account.ledger.unanswered_jobs(account.client, key, account.flow_run_id):
        since = (row.created_at or datetime.now(timezone.utc)) - timedelta(seconds=CLOCK_SKEW_S)
        try:
            handle = await call_with_retries(lambda since=since: provider.find_job(request, since, known),
                                             provider=provider.provider_name, what="job lookup", attempts=4)
        except Exception as exc:  # noqa: BLE001 - cannot look: the reservation stands, a new job is submitted
            logger.warning("%s: could not look for the job of reservation %s: %s", provider.provider_name, row.id, exc)
            return None
        if handle is None:
            account.ledger.job_released(row.id, "its run died before the provider answered, and the provider has no such job")
            continue
        journal_id = account.ledger.job_accepted(row.id, handle, row.cost_usd)
        logger.info("%s job %s, submitted by a run that died before it was answered, found and resumed",
                    provider.provider_name, handle.job_id)
        await crash_abandoned_run(row.flow_run_id, account.flow_run_id)
        return journal_id, handle
    return None


async def on_this_machine(provider: ImageProvider, call: Awaitable[T]) -> T:
    """A local engine renders on this machine's cores: its calls take a CPU slot (tasks/cpu.py),
    so a catalog's many assets in progress do not render all at once (16 renders at 1024 px
    took the catalog process to 2 GB). A hosted provider's call only waits on the network."""
    if provider.uses_shared_limits:
        return await call
    await asyncio.to_thread(cpu_slot.acquire)
    try:
        return await call
    finally:
        cpu_slot.release()


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


async def generate(
    request: GenerationRequest,
    provider: ImageProvider,
    out_dir: str,
    poll_every: float = 5.0,
    deadline_s: float = 120.0,
    account: JobAccount | None = None,
    store_dir: str | None = None,
    generation_key: str | None = None,
) -> GenerationResult:
    """Run one generation (journalled in `account`'s ledger) and keep its image files as they came.

    With a `store_dir` and a `generation_key`, the images live in that generation store: a
    generation already there is returned at once (no provider call, $0), a new one is stored
    before its job is marked finished. Without, they are written under `out_dir`."""
    started = time.monotonic()
    store = GenerationStore(store_dir) if store_dir and generation_key else None
    if store is not None and (stored := store.get(generation_key)) is not None:  # type: ignore[arg-type]
        logger.info("generation %s taken from the store: no provider call", generation_key[:12])  # type: ignore[index]
        return stored
    paths: list[str] = []
    price = provider.price_per_image_usd

    def keep(handle: JobHandle, outputs: list[bytes]) -> None:
        if store is not None:
            paths[:] = store.put(generation_key, outputs, provider=provider.provider_name, model=provider.model,  # type: ignore[arg-type]
                                 job_ids=[handle.job_id], cost_usd=round(price * len(outputs), 6), seed=request.seed,
                                 reported_seed=reported_seed(handle, request))
            return
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        paths[:] = [str((folder / name).resolve()) for name in write_outputs_verbatim(folder, outputs)]

    handle, _, timings = await run_generation(request, provider, poll_every=poll_every, deadline_s=deadline_s,
                                              account=account, keep=keep)
    return GenerationResult(
        images=paths, provider=provider.provider_name, model=provider.model, job_ids=[handle.job_id],
        seed=request.seed, cost_usd=round(price * len(paths), 6), generation_key=generation_key,
        seconds=round(time.monotonic() - started, 3), reported_seed=reported_seed(handle, request), timings=timings,
    )


# In-call retries (call_with_retries) handle 429/5xx/timeouts; a task retry is for what
# outlives them (a job past its deadline is resumed, not paid for again).
@task(
    name="generate-images",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient_only,
    cache_policy=NO_CACHE,
)
def generate_images(
    request: GenerationRequest,
    provider: ImageProvider,
    out_dir: str,
    poll_every: float = 5.0,
    deadline_s: float = 120.0,
    account: JobAccount | None = None,
    store_dir: str | None = None,
    generation_key: str | None = None,
) -> GenerationResult:
    """`generate` as a task run. A sync task that runs the wait on a loop of its own: an async task run
    opens a Prefect client of its own each time (a new connection, and the CA bundle parsed again),
    measured at ~5 % of a catalog's CPU for it and `publish_item` together; a sync one uses its thread's."""
    return asyncio.run(generate(request, provider, out_dir, poll_every=poll_every, deadline_s=deadline_s, account=account,
                                store_dir=store_dir, generation_key=generation_key))


def reported_seed(handle: JobHandle, request: GenerationRequest) -> int | None:
    """The seed the provider says it used (its `fetch` puts it in the handle), when it differs from ours."""
    seed = handle.extra.get("reported_seed")
    return seed if isinstance(seed, int) and seed != request.seed else None
