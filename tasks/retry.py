"""Retry policy shared by every task that talks to the outside world.

Only failures a retry can help are retried: rate limits (after the provider's
Retry-After), 5xx, timeouts and dropped connections. Validation errors,
content filters and bad input fail at once.
"""

from __future__ import annotations

import httpx

from models import BrandforgeError, ProviderError, PublishError


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return exc.retryable
    if isinstance(exc, PublishError):
        return exc.retryable
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, ConnectionError, TimeoutError))


def retry_transient_only(task, task_run, state) -> bool:
    """`retry_condition_fn` for Prefect tasks: retry only what `is_retryable` allows."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we classify, not swallow
        return is_retryable(exc)
    return False


def retry_unless_refused(task, task_run, state) -> bool:
    """For storage reads: retry anything except our own refusals (bad input, rejected assets)."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (ProviderError, PublishError)):
            return exc.retryable
        return not isinstance(exc, BrandforgeError)
    return False
