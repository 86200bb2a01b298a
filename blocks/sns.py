"""Amazon SNS deliveries: message signatures, subscription confirmation, trigger settings.

SNS cannot send a bearer token. A delivery is authenticated by its signature
(SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA over the fixed
`Name\\nValue\\n` string of the message type) with the certificate at
`SigningCertURL`, fetched only over https from a host matching the allowed
pattern (`sns.<region>.amazonaws.com`, `.com.cn`), through the URL guard, and
cached; and by its `TopicArn`, which must be one the client's profile lists.
`SubscribeURL` is followed under the same host rule to confirm a subscription.
A message whose `Timestamp` is older than `max_age_s` (default one hour, as the
AWS SDKs' validators use; `BRANDFORGE_SNS_MAX_AGE_S`) or as far in the future is
refused before its certificate is fetched: a captured delivery cannot be replayed.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from brandforge.blocks.triggers import SnsSettings
from brandforge.blocks.http import reason_from_body, safe_url, sync_client, tls_context
from brandforge.blocks.url_guard import UrlPolicy, UrlRefused, parse_host

SNS_HOST_PATTERN = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
SNS_HOSTS_ENV = "BRANDFORGE_SNS_CERT_HOSTS"
MAX_AGE_ENV = "BRANDFORGE_SNS_MAX_AGE_S"
DEFAULT_MAX_AGE_S = 3600.0
MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
MAX_CERT_BYTES = 64 * 1024


class SnsRejected(ValueError):
    """An SNS delivery that is not authentic (forged, tampered, from a host not allowed)."""


def _max_age_from_env() -> float:
    try:
        return float(os.environ.get(MAX_AGE_ENV, "") or DEFAULT_MAX_AGE_S)
    except ValueError:
        return DEFAULT_MAX_AGE_S


def message_age_s(doc: dict[str, Any], now: float | None = None) -> float:
    """Seconds since the message's `Timestamp` (ISO 8601, as SNS writes it); SnsRejected when it has none."""
    stamp = doc.get("Timestamp")
    try:
        sent = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError as exc:
        raise SnsRejected(f"SNS Timestamp {str(stamp)[:40]!r} is not an ISO 8601 time") from exc
    if sent.tzinfo is None:
        raise SnsRejected(f"SNS Timestamp {str(stamp)[:40]!r} has no time zone")
    return (now if now is not None else time.time()) - sent.timestamp()


def string_to_sign(doc: dict[str, Any]) -> bytes:
    """The canonical `Name\\nValue\\n` string of an SNS message of its type."""
    kind = doc.get("Type")
    if kind not in _SIGNED_FIELDS:
        raise SnsRejected(f"SNS message Type must be one of {', '.join(MESSAGE_TYPES)} (got {kind!r})")
    parts = []
    for name in _SIGNED_FIELDS[kind]:
        if name == "Subject" and doc.get("Subject") is None:
            continue
        value = doc.get(name)
        if not isinstance(value, str):
            raise SnsRejected(f"SNS {kind} lacks the string field {name!r}")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


@dataclass
class SnsVerifier:
    """Checks SNS signatures; fetches signing certificates (cached) and confirms subscriptions."""

    host_pattern: str = field(default_factory=lambda: os.environ.get(SNS_HOSTS_ENV) or SNS_HOST_PATTERN)
    ssl_context: ssl.SSLContext | None = None  # extra trust for a private certificate host (tests)
    timeout_s: float = 10.0
    max_age_s: float = field(default_factory=_max_age_from_env)
    _certs: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check_sns_url(self, url: Any, what: str) -> str:
        """`url` if it is https on an allowed SNS host, else SnsRejected (before any connection)."""
        if not isinstance(url, str):
            raise SnsRejected(f"{what} is missing")
        try:
            scheme, host, _, _ = parse_host(url, UrlPolicy.from_env())
        except UrlRefused as exc:
            raise SnsRejected(f"{what} refused: {exc.why}") from exc
        if scheme != "https" or not re.fullmatch(self.host_pattern, host):
            raise SnsRejected(f"{what} {safe_url(url)} refused: it must be https on an SNS host "
                              f"(matching {self.host_pattern})")
        return url

    def _get(self, url: str, what: str) -> bytes:
        try:
            with sync_client(self.timeout_s, ssl_context=self.ssl_context or tls_context(),
                             follow_redirects=False) as client:
                resp = client.get(url)
        except UrlRefused as exc:
            raise SnsRejected(f"{what} refused: {exc.why}") from exc
        except Exception as exc:  # noqa: BLE001 - transport faults: SNS retries the delivery
            raise ConnectionError(f"{what} {safe_url(url)} could not be fetched: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise ConnectionError(f"{what} {safe_url(url)} answered HTTP {resp.status_code}: {reason_from_body(resp)}")
        if len(resp.content) > MAX_CERT_BYTES:
            raise SnsRejected(f"{what} {safe_url(url)} is larger than {MAX_CERT_BYTES} bytes")
        return resp.content

    def certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            cached = self._certs.get(url)
        if cached is not None:
            return cached
        try:
            cert = x509.load_pem_x509_certificate(self._get(url, "SigningCertURL"))
        except ValueError as exc:
            raise SnsRejected(f"SigningCertURL {safe_url(url)} is not a PEM certificate") from exc
        with self._lock:
            self._certs[url] = cert
        return cert

    def verify(self, doc: dict[str, Any]) -> None:
        """Raise SnsRejected unless `doc` is signed by the certificate its SigningCertURL names."""
        version = doc.get("SignatureVersion")
        algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(str(version))
        if algorithm is None:
            raise SnsRejected(f"SNS SignatureVersion must be 1 or 2 (got {version!r})")
        url = self.check_sns_url(doc.get("SigningCertURL") or doc.get("SigningCertUrl"), "SigningCertURL")
        message = string_to_sign(doc)
        age = message_age_s(doc)
        if abs(age) > self.max_age_s:  # before any certificate is fetched
            when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
            raise SnsRejected(f"SNS message is {when}; messages more than {self.max_age_s:.0f} s off are refused "
                              "(a replayed delivery?)")
        try:
            signature = base64.b64decode(str(doc.get("Signature") or ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SnsRejected("SNS Signature is not base64") from exc
        if not signature:
            raise SnsRejected("SNS message is not signed")
        key = self.certificate(url).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsRejected("SNS signing certificate does not hold an RSA key")
        try:
            key.verify(signature, message, padding.PKCS1v15(), algorithm)
        except InvalidSignature as exc:
            raise SnsRejected("SNS signature does not match the message") from exc

    def confirm(self, doc: dict[str, Any]) -> str:
        """Confirm a subscription by fetching its SubscribeURL (same host rule); says what happened."""
        url = self.check_sns_url(doc.get("SubscribeURL"), "SubscribeURL")
        self._get(url, "SubscribeURL")
        return f"subscription to {doc.get('TopicArn')} confirmed"


def topic_allowed(settings: SnsSettings | None, topic_arn: Any) -> bool:
    return bool(settings) and isinstance(topic_arn, str) and topic_arn in settings.topic_arns
