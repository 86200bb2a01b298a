"""Retry policy shared by every task that talks to the outside world.

Only failures a retry can help are retried: rate limits (after the provider's
Retry-After), 5xx, timeouts and dropped connections. Validation errors,
content filters and bad input fail at once.
"""

from __future__ import annotations

import inspect

import httpx

from brandforge.models import BrandforgeError, ProviderError, PublishError


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return exc.retryable
    if isinstance(exc, PublishError):
        return exc.retryable
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, ConnectionError, TimeoutError))


def failure_of(state) -> BaseException | None:
    """The exception a failed task state carries.

    Prefect hands the engine's exception over as `state.data`; `state.result()` is
    only the fallback, because inside an async task it returns an un-awaited
    coroutine instead of raising (and the retry would silently never happen).
    """
    if isinstance(state.data, BaseException):
        return state.data
    try:
        result = state.result()
    except BaseException as exc:  # noqa: BLE001 - we classify, not swallow
        return exc
    if inspect.iscoroutine(result):
        result.close()
    return None


def retry_transient_only(task, task_run, state) -> bool:
    """`retry_condition_fn` for Prefect tasks: retry only what `is_retryable` allows."""
    exc = failure_of(state)
    return exc is not None and is_retryable(exc)


def retry_unless_refused(task, task_run, state) -> bool:
    """For storage reads: retry anything except our own refusals (bad input, rejected assets)."""
    exc = failure_of(state)
    if exc is None:
        return False
    if isinstance(exc, (ProviderError, PublishError)):
        return exc.retryable
    return not isinstance(exc, BrandforgeError)


def retry_orchestration_errors(task, task_run, state) -> bool:
    """For the per-asset wrapper task: retry when the Prefect API itself failed (5xx, dropped
    connection), not when the asset did (process_asset records those and returns normally)."""
    from prefect.exceptions import PrefectHTTPStatusError

    exc = failure_of(state)
    if isinstance(exc, PrefectHTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError))
