"""C2paSigner: a signing identity for C2PA manifests (Content Credentials), as a Prefect block.

The encode step asks it to sign a finished file: the manifest declares the
image `c2pa.created` with IPTC digital source type `trainedAlgorithmicMedia`
and carries the generation parameters as a `com.brandforge.generation`
assertion. Signing is offline unless a timestamp authority URL is set. The
certificate chain must come from a CA (C2PA refuses a self-signed leaf);
`trust_anchors` lets `read_manifest` report a private CA's files as Trusted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from brandforge.models import InvalidInput

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_ASSERTION = "com.brandforge.generation"


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError as exc:
        raise InvalidInput(f"C2PA signing needs c2pa-python (pip install 'brandforge[postprocess]'): {exc}") from exc
    return c2pa


class C2paSigner(Block):
    """Certificate chain and private key that sign brandforge's C2PA manifests."""

    _block_type_name = "Brandforge C2PA Signer"
    _block_type_slug = "brandforge-c2pa-signer"
    _description = "Signs C2PA manifests (Content Credentials) on published images."

    certificate_chain: SecretStr = Field(description="PEM certificates, the signing leaf first, then its issuers.")
    private_key: SecretStr = Field(description="PEM private key of the leaf certificate.")
    algorithm: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = "es256"
    timestamp_url: str | None = Field(None, description="RFC 3161 timestamp authority; none signs offline.")
    trust_anchors: str | None = Field(None, description="PEM roots trusted when reading manifests back (a private CA).")
    claim_generator: str = Field("brandforge", description="Name written as the manifest's claim generator.")
    embed_thumbnail: bool = Field(False, description="Embed a thumbnail in the manifest (adds ~30 KB).")

    def build_manifest(self, title: str, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "claim_generator_info": [{"name": self.claim_generator, "version": "0.1.0"}],
            "title": title,
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {"action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE, "softwareAgent": {"name": self.claim_generator}}
                        ]
                    },
                },
                {"label": GENERATION_ASSERTION, "data": json.loads(json.dumps(params, default=str))},
            ],
        }

    def sign_file(self, source: str | Path, dest: str | Path, params: dict[str, Any]) -> None:
        """Write `dest`: `source` with a signed manifest embedded (JUMBF in JPEG/WebP/AVIF, caBX in PNG)."""
        c2pa = _c2pa()
        info = c2pa.C2paSignerInfo(
            alg=self.algorithm.encode(),
            sign_cert=self.certificate_chain.get_secret_value().encode(),
            private_key=self.private_key.get_secret_value().encode(),
            ta_url=self.timestamp_url.encode() if self.timestamp_url else None,
        )
        try:
            signer = c2pa.Signer.from_info(info)
            context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": self.embed_thumbnail}}})
            builder = c2pa.Builder(json.dumps(self.build_manifest(Path(dest).name, params)), context)
            builder.sign_file(str(source), str(dest), signer)
        except c2pa.C2paError as exc:
            raise InvalidInput(f"C2PA signing failed (check certificate_chain, private_key and algorithm): {exc}") from exc

    def read_manifest(self, path: str | Path) -> dict[str, Any]:
        """The file's manifest store as JSON, validated against `trust_anchors` when set."""
        c2pa = _c2pa()
        settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False}}
        if self.trust_anchors:
            settings["trust"] = {"user_anchors": self.trust_anchors}
        reader = c2pa.Reader(str(path), context=c2pa.Context.from_dict(settings))
        return json.loads(reader.json())
