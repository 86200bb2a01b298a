"""HTTP answers of CMS targets mapped to `PublishError`, shared by WordPress and Strapi.

One rule for every HTTP target: 408, 429, 5xx, timeouts and dropped connections
are worth another try; 401, 403, 404, 413 and every other 4xx are not. The
reason names the target, what was being done and what the CMS said, and never
carries a credential.
"""

from __future__ import annotations

from typing import Any

import httpx

from models import PublishError

# What a person should check for each refusal that no retry can fix.
_HINTS = {
    401: "the credentials were not accepted; check the user name and password/token",
    403: "the credentials lack the permission for this; check the user's role or the token's scope",
    404: "not found; check the site address and the content type",
    413: "the file is larger than the server accepts; raise its upload limit or publish a smaller image",
}


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def error_body(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from a JSON error body (WordPress `{code, message}` or Strapi `{error: {name, message}}`)."""
    try:
        body: Any = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return "", text[:200]
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):  # Strapi v4/v5
            err = body["error"]
            return str(err.get("name") or ""), str(err.get("message") or "")
        return str(body.get("code") or ""), str(body.get("message") or "")
    return "", str(body)[:200]


def status_error(
    target: str, what: str, response: httpx.Response, *, retryable: bool | None = None, hint: str | None = None
) -> PublishError:
    code, message = error_body(response)
    status = response.status_code
    said = " ".join(p for p in (code, message) if p) or response.reason_phrase
    hint = hint or _HINTS.get(status, "")
    reason = f"{target} answered {status} to {what}: {said}" + (f" ({hint})" if hint else "")
    return PublishError(reason, retryable=is_retryable_status(status) if retryable is None else retryable, status_code=status)


def transport_error(target: str, what: str, url: str, exc: httpx.TransportError, timeout: float) -> PublishError:
    if isinstance(exc, httpx.TimeoutException):
        reason = f"{target} at {url} did not answer {what} within {timeout:g} s"
    else:
        reason = f"{target} at {url} could not be reached for {what}: {type(exc).__name__}: {exc}"
    return PublishError(reason, retryable=True)
