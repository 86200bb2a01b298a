"""A local stand-in for Amazon SNS: its own CA, an https certificate host on 127.0.0.1 serving the
signing certificate and answering SubscribeURL, and a signer that signs messages as SNS does
(SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA over the canonical string)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from brandforge.blocks.sns import string_to_sign

TOPIC = "arn:aws:sns:eu-west-1:123456789012:acme-uploads"
CERT_PATH = "/SimpleNotificationService-local.pem"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(subject: str, key, issuer_name: x509.Name | None, issuer_key, *, ca: bool, ip: str | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class FakeSns:
    folder: Path
    confirmations: list[str] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        ca_key = _key()
        self.ca = _cert("brandforge test CA", ca_key, None, None, ca=True)
        server_key = _key()
        server = _cert("127.0.0.1", server_key, self.ca.subject, ca_key, ca=False, ip="127.0.0.1")
        self.signing_key = _key()
        self.signing_cert = _cert("sns.local", self.signing_key, self.ca.subject, ca_key, ca=False)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "server.pem").write_bytes(_pem(server))
        (self.folder / "server.key").write_bytes(_pem(server_key))
        self.tls = (str(self.folder / "server.pem"), str(self.folder / "server.key"))
        self.app = Starlette(routes=[Route(CERT_PATH, self.cert), Route("/confirm", self.confirm)])
        self.url = ""

    def client_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cadata=_pem(self.ca).decode())
        return ctx

    async def cert(self, request: Request) -> Response:
        self.hits.append(CERT_PATH)
        return Response(_pem(self.signing_cert), media_type="application/x-pem-file")

    async def confirm(self, request: Request) -> Response:
        self.hits.append("/confirm")
        self.confirmations.append(request.query_params.get("Token", ""))
        return PlainTextResponse("<ConfirmSubscriptionResponse/>")

    def message(self, kind: str, message: str, *, version: str = "1", topic: str = TOPIC, subject: str | None = None,
                cert_url: str | None = None, subscribe_url: str | None = None, key=None, sent: dt.datetime | None = None) -> dict:
        doc = {"Type": kind, "MessageId": str(uuid.uuid4()), "TopicArn": topic, "Message": message,
               "Timestamp": (sent or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
               "SignatureVersion": version, "SigningCertURL": cert_url or f"{self.url}{CERT_PATH}"}
        if subject is not None:
            doc["Subject"] = subject
        if kind != "Notification":
            doc["Token"] = uuid.uuid4().hex
            doc["SubscribeURL"] = subscribe_url or f"{self.url}/confirm?Action=ConfirmSubscription&Token={doc['Token']}"
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.signing_key).sign(string_to_sign(doc), padding.PKCS1v15(), algorithm)
        doc["Signature"] = base64.b64encode(signature).decode()
        return doc

    def notification(self, s3_event: dict, **kw) -> dict:
        return self.message("Notification", json.dumps(s3_event), **kw)
