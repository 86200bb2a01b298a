"""The recipe snapshot: everything that decided an image, as values, for its ledger row.

The recipe key and generation key are hashes: they say *whether* something changed, not *what* it
was. The snapshot (`models.RecipeSnapshot`) keeps the values themselves — template name, version
and rendered prompt, the provider block (type, saved name, settings without secrets, model, the
parameters as they went over its wire), the chain with its settings, encode settings, palette,
the logo's sha256 and location, the target — so `brandforge replay` can rebuild the image from
the ledger row alone (tasks/replay.py), and an audit can say what a hash stood for.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import SecretBytes, SecretStr

from brandforge.models import (
    BrandforgeError,
    GenerationRequest,
    LogoSnapshot,
    ProviderSnapshot,
    Recipe,
    RecipeSnapshot,
    StepSpec,
    content_hash,
)


def block_ref(block: Any) -> str | None:
    """'block-type-slug/name' of a saved block (how `Block.load` finds it again); None for an inline one."""
    name = getattr(block, "_block_document_name", None) if block is not None else None
    return f"{block.get_block_type_slug()}/{name}" if name else None


def secret_fields(block: Any) -> list[str]:
    """The block's fields that hold credentials (SecretStr, SecretBytes, Prefect's SecretDict): never recorded."""
    return sorted(name for name in type(block).model_fields if _is_secret(getattr(block, name, None)))


def _is_secret(value: Any) -> bool:
    return isinstance(value, (SecretStr, SecretBytes)) or type(value).__name__ == "SecretDict"


def public_settings(block: Any) -> dict[str, Any]:
    """A block's settings as JSON values, secrets left out. A nested block (a target's bucket and its
    credentials) is recorded by its type and saved name only: an access key id is not the ledger's to keep."""
    from prefect.blocks.core import Block
    from pydantic_core import to_jsonable_python

    settings: dict[str, Any] = {}
    for name in type(block).model_fields:
        value = getattr(block, name, None)
        if _is_secret(value):
            continue
        if isinstance(value, Block):
            settings[name] = {"block_type": value.get_block_type_slug(), "block": block_ref(value)}
        else:
            settings[name] = to_jsonable_python(value)
    return settings


def provider_snapshot(block: Any, ref: str, request: GenerationRequest) -> ProviderSnapshot:
    """The provider block as values. The wire parameters are what `wire_params` sends; a request the
    provider refuses records none (the generate stage fails with the refusal)."""
    secrets = secret_fields(block)
    settings = public_settings(block)
    try:
        wire = block.wire_params(request)
    except (BrandforgeError, NotImplementedError):
        wire = {}
    return ProviderSnapshot(ref=ref or "default", name=block.provider_name, block_type=block.get_block_type_slug(),
                            block_document=getattr(block, "_block_document_name", None), model=block.model,
                            settings=settings, wire=wire, secret_fields=secrets)


@lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    return content_hash(Path(path).read_bytes())


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a file's bytes (cached while its size and mtime stay), None when it is missing."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    return _file_sha256(str(p.resolve()), st.st_mtime_ns, st.st_size)


def logo_snapshot(logo_path: str | None) -> LogoSnapshot | None:
    if not logo_path:
        return None
    digest = file_sha256(logo_path)
    return LogoSnapshot(path=str(Path(logo_path).resolve()), sha256=digest) if digest else None


def encode_settings(chain: list[StepSpec], output_format: str) -> dict[str, Any]:
    """The encode step's settings with every default filled in and the format resolved."""
    from brandforge.tasks.postprocess.encode import EncodeParams

    last = chain[-1] if chain else None
    params = EncodeParams.model_validate(last.params if last is not None and last.step == "encode" else {})
    return {**params.model_dump(), "format": params.format or output_format}


def recipe_snapshot(*, recipe: Recipe, request: GenerationRequest, prompt: str, template: str | None, caption: str | None,
                    provider: Any, provider_ref: str, profile: Any, target: Any = None) -> RecipeSnapshot:
    """The snapshot of one planned asset (its generation's outcome is added by `tasks.ledger.ledger_entry`);
    `target`: the routed publish target (unset: the profile's own)."""
    target = target if target is not None else getattr(profile, "target", None)
    return RecipeSnapshot(
        template=template, prompt=prompt, caption=caption, request=request,
        provider=provider_snapshot(provider, provider_ref, request),
        recipe=recipe.name, chain=list(recipe.chain), encode=encode_settings(recipe.chain, recipe.output_format),
        output_format=recipe.output_format, palette=list(profile.palette), logo=logo_snapshot(profile.logo_path),
        refiner=block_ref(profile.refiner), c2pa_signer=block_ref(profile.c2pa_signer),
        target=f"{target.target_name} ({block_ref(target) or target.get_block_type_slug()})" if target is not None else None,
        target_settings=public_settings(target) if target is not None else {},
    )


def provenance_metadata(params: dict[str, Any], *, generation_key: str | None, source_key: str | None, provider: str | None,
                        model: str | None, client: str) -> dict[str, Any]:
    """What every output file embeds (encode step): the parameters and the keys. One function for the
    pipeline and for replay, so a replayed file carries the very same bytes of metadata."""
    return {**params, "generation_key": generation_key, "source_key": source_key, "provider": provider, "model": model,
            "client": client}
