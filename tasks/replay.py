"""Replay: rebuild a published image from its ledger row alone, and say whether the bytes match.

The row's recipe snapshot (`models.RecipeSnapshot`, written by `tasks.ledger.ledger_entry`) holds
everything that decided the image as values: the request (prompt, seed, strength, LoRAs, control,
sizes), the provider block's type, settings and model, the chain with its settings, encode
settings, palette, and the logo's location and sha256. Replay:

1. finds the row (a ledger row id, a generation key or a published URL);
2. takes the raw generation from the generation store when it is there — post-processing only,
   no provider call, $0 — else sends the same request to the same provider and model, which costs
   money and so needs `allow_provider_call` (refused otherwise, saying so); the job is journalled
   in the ledger like any other, and the answer is kept in the store;
3. checks the logo against its recorded hash (a changed or missing logo is refused by name: the
   watermark could not match), runs the recorded chain and encode with the same provenance
   metadata, and compares the sha256 of the result with the published file's (read from the
   published URL, else the target's path, else the run's own output).

Nothing here reads the client's profile, except for a hosted provider's credentials when a
regeneration needs them and its block was not saved under a name (`load_profile` by `client`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from brandforge.blocks.ledger import Ledger
from brandforge.models import (
    BrandforgeError,
    InvalidInput,
    LedgerEntry,
    ProviderSnapshot,
    RecipeSnapshot,
    StepSpec,
    content_hash,
)
from brandforge.tasks.generation_store import GenerationStore
from brandforge.tasks.snapshot import file_sha256, provenance_metadata


class ReplayError(BrandforgeError):
    """The image cannot be replayed (no such row, no snapshot, a source gone); `kind` names why."""

    kind = "cannot replay"


class ProviderCallRefused(ReplayError):
    """The generation is not in the store and regenerating it would call (and pay) the provider."""

    kind = "provider call refused"


class LogoChanged(ReplayError):
    """The logo file is not the one the image was watermarked with."""

    kind = "logo changed"


@dataclass
class ReplayReport:
    row_id: int
    entry: LedgerEntry
    generation_from: str  # "store" or "provider"
    provider_calls: int
    output_path: str
    output_sha256: str
    published_from: str | None
    published_sha256: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.published_sha256 is not None and self.output_sha256 == self.published_sha256

    def render(self) -> str:
        e = self.entry
        snap = e.recipe_snapshot
        assert snap is not None
        gen = ("the generation store (no provider call, $0)" if self.generation_from == "store"
               else f"{snap.provider.name} / {snap.provider.model} again ({self.provider_calls} provider call)")
        lines = [
            f"replay    ledger row {self.row_id}  ({e.client}, {Path(e.source_uri).name}, recipe {e.recipe})",
            f"template  {snap.template or '(the profile prompt_template)'}",
            f"prompt    {snap.prompt}",
            f"provider  {snap.provider.ref} → {snap.provider.name}, model {snap.provider.model}, seed {snap.request.seed}"
            + (f" (provider reported {snap.reported_seed})" if snap.reported_seed is not None else ""),
            f"pixels    from {gen}",
            f"chain     {' → '.join(s.step for s in snap.chain) or '(none)'}",
            f"logo      {snap.logo.path + ' (sha256 ' + snap.logo.sha256[:12] + '…, unchanged)' if snap.logo else '—'}",
            f"rebuilt   {self.output_path}",
            f"          sha256 {self.output_sha256}",
            f"published {self.published_from or '(not readable)'}",
            f"          sha256 {self.published_sha256 or '—'}",
            *(f"note      {n}" for n in self.notes),
            "result    identical bytes" if self.identical else
            ("result    DIFFERENT bytes" if self.published_sha256 else "result    no published file to compare with"),
        ]
        return "\n".join(lines)


# --------------------------------------------------------------------------- the row


def find_row(ledger: Ledger, ref: str, client: str | None) -> tuple[int, LedgerEntry]:
    """The row `ref` names: a ledger row id, a generation key (or an 8+ character prefix) or a published
    URL. Of several, the newest published one (a replay rebuilds what was published)."""
    ref = ref.strip()
    rows = ledger.lineage(ref, client)
    named = [(i, e) for i, e in rows if str(i) == ref or e.published_url == ref
             or (e.generation_key and len(ref) >= 8 and e.generation_key.startswith(ref))]
    if not named:
        whose = "any client" if client is None else f"client {client!r}"
        raise ReplayError(f"nothing of {whose} in the ledger at {ledger.url} matches {ref!r} "
                          "(give a ledger row id, a generation key or a published URL)")
    published = [(i, e) for i, e in named if e.state == "published"]
    return (published or named)[-1]


# --------------------------------------------------------------------------- blocks from the snapshot


def _block_class(slug: str) -> Any:
    import brandforge.blocks  # noqa: F401 - registers every block type of ours
    from prefect.blocks.core import Block
    from prefect.utilities.dispatch import lookup_type

    try:
        return lookup_type(Block, slug)
    except KeyError as exc:
        raise ReplayError(f"the recorded provider block type {slug!r} is unknown to this brandforge") from exc


def rebuild_provider(snap: ProviderSnapshot, client: str, load_profile: Callable[[str], Any] | None = None) -> Any:
    """The provider block as recorded. Its credentials (never recorded) come from its saved block when it was
    one, else from the client's profile (the provider of the same name, of the same type)."""
    cls = _block_class(snap.block_type)
    settings = {**snap.settings, "model": snap.model}
    if not snap.secret_fields:
        return cls.model_validate(settings)
    if snap.block_document:
        base = cls.load(snap.block_document)
    else:
        if load_profile is None:
            from brandforge.tasks.profiles import load_profile
        base = load_profile(client).provider_block(snap.ref)
        if base.get_block_type_slug() != snap.block_type:
            raise ReplayError(f"client {client}'s provider {snap.ref!r} is now a {base.get_block_type_slug()}, "
                              f"the image was made by a {snap.block_type}: its credentials do not apply")
    return cls.model_validate({**{k: getattr(base, k) for k in snap.secret_fields}, **settings})


def _load_named_block(ref: str | None, what: str) -> Any:
    if not ref:
        return None
    from prefect.blocks.core import Block

    try:
        return Block.load(ref)
    except Exception as exc:  # noqa: BLE001 - a missing block or an unreachable API: the chain cannot run
        raise ReplayError(f"the recorded {what} block {ref!r} cannot be loaded: {exc}") from exc


# --------------------------------------------------------------------------- the pixels


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path (or a Windows drive)
        return Path(uri)
    return None


def restore_source(entry: LedgerEntry, snap: RecipeSnapshot) -> None:
    """The normalised source the request names, written again from the original when it is gone (a local
    source only, and only with the very bytes the row recorded)."""
    from brandforge.tasks.load import normalise_image

    target = _local_path(snap.request.source_image)
    if target is None or target.is_file():
        return
    original = _local_path(entry.source_uri)
    if original is None or not original.is_file():
        raise ReplayError(f"the normalised source {target} is gone and the original {entry.source_uri} cannot be read here")
    data = original.read_bytes()
    if content_hash(data) != entry.source_key:
        raise ReplayError(f"the source {entry.source_uri} changed since the image was made (its sha256 is not the "
                          f"recorded source key {entry.source_key})")
    img, _, _ = normalise_image(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    img.save(target, format="PNG")


def raw_images(row_id: int, entry: LedgerEntry, snap: RecipeSnapshot, ledger: Ledger, *, allow_provider_call: bool,
               store_dir: str | None, out_dir: Path, load_profile: Callable[[str], Any] | None = None) -> tuple[list[str], str]:
    """The generation's raw images and where they came from ("store" or "provider")."""
    from brandforge.tasks.generate import JobAccount, generate

    key = entry.generation_key
    store = GenerationStore(store_dir or snap.generation_store) if (store_dir or snap.generation_store) and key else None
    if store is not None and (stored := store.get(key)) is not None:  # type: ignore[arg-type]
        return stored.images, "store"
    where = f" (looked in {store.root})" if store is not None else ""
    if not allow_provider_call:
        raise ProviderCallRefused(
            f"generation {(key or '?')[:16]} is not in the generation store{where}; rebuilding it sends the same request "
            f"to {snap.provider.name} / {snap.provider.model}, which may cost money "
            f"(${float(snap.provider.settings.get('price_per_image_usd') or 0) * snap.request.batch_size:.4f} at the "
            "recorded price): give --allow-provider-call to do it")
    provider = rebuild_provider(snap.provider, entry.client, load_profile)
    restore_source(entry, snap)
    account = JobAccount(ledger=ledger, client=entry.client, run_key=f"replay-{row_id}", generation_key=key,
                         source_uri=entry.source_uri)
    result = asyncio.run(generate(snap.request, provider, str(out_dir / "raw"), account=account,
                                            store_dir=str(store.root) if store is not None else None, generation_key=key))
    return result.images, "provider"


def check_logo(snap: RecipeSnapshot) -> None:
    """A chain that watermarks with the logo needs the very logo it used: same path, same sha256."""
    uses_logo = any(s.step == "watermark" and not s.params.get("text") for s in snap.chain)
    if not uses_logo or snap.logo is None:
        return
    now = file_sha256(snap.logo.path)
    if now is None:
        raise LogoChanged(f"the logo {snap.logo.path} the image was watermarked with is missing "
                          f"(recorded sha256 {snap.logo.sha256}); restore it to replay")
    if now != snap.logo.sha256:
        raise LogoChanged(f"the logo {snap.logo.path} changed since the image was made: recorded sha256 "
                          f"{snap.logo.sha256}, now {now}; restore that logo to replay (a new logo makes a new image)")


def published_bytes(entry: LedgerEntry, chosen: int) -> tuple[str | None, bytes | None, list[str]]:
    """The published file's bytes: from the published URL (file:// or http(s), through the URL guard), else
    the target's local path, else the run's own output. Returns (where, bytes, notes)."""
    from brandforge.blocks.providers.http import download

    notes: list[str] = []
    candidates = [entry.published_url, entry.remote_ids.get("path"),
                  entry.output_uris[chosen] if chosen < len(entry.output_uris) else None]
    for i, uri in enumerate(c for c in candidates if c):
        try:
            local = _local_path(str(uri))
            data = local.read_bytes() if local is not None else asyncio.run(download("replay", str(uri)))
        except Exception as exc:  # noqa: BLE001 - try the next place, say why this one failed
            notes.append(f"published file not readable at {uri}: {exc}")
            continue
        if i > 0:
            notes.append(f"compared with {uri} (the published URL could not be read)")
        return str(uri), data, notes
    return None, None, notes


def replay_image(ref: str, *, ledger: Ledger, client: str | None, allow_provider_call: bool = False,
                 out_dir: str | Path = ".brandforge/replay", store_dir: str | None = None,
                 load_profile: Callable[[str], Any] | None = None) -> ReplayReport:
    """Rebuild the image of the row `ref` names and compare it with the published file (module docstring).

    `store_dir` overrides the recorded generation store folder (a work folder that moved)."""
    from brandforge.tasks.postprocess.chain import ChainContext, write_outputs

    row_id, entry = find_row(ledger, ref, client)
    snap = entry.recipe_snapshot
    if snap is None:
        raise ReplayError(f"ledger row {row_id} has no recipe snapshot (written before brandforge recorded one, or "
                          f"it ended before a request was made: {entry.state}{': ' + entry.reason if entry.reason else ''})")
    check_logo(snap)
    folder = Path(out_dir) / f"row-{row_id}"
    folder.mkdir(parents=True, exist_ok=True)
    images, generation_from = raw_images(row_id, entry, snap, ledger, allow_provider_call=allow_provider_call,
                                         store_dir=store_dir, out_dir=folder, load_profile=load_profile)
    chosen = entry.scores.get("chosen", 0) if isinstance(entry.scores.get("chosen", 0), int) else 0
    if chosen >= len(images):
        raise ReplayError(f"the generation has {len(images)} image(s); the row published variant {chosen}")
    source = _local_path(snap.request.source_image)
    ctx = ChainContext(
        seed=snap.request.seed or 0, client=entry.client, palette=tuple(snap.palette),
        logo_path=snap.logo.path if snap.logo else None, source_path=str(source) if source else None,
        output_format=snap.output_format,
        metadata=provenance_metadata(entry.params, generation_key=entry.generation_key, source_key=entry.source_key,
                                     provider=entry.provider, model=entry.model, client=entry.client),
        refiner=_load_named_block(snap.refiner, "refiner"), c2pa_signer=_load_named_block(snap.c2pa_signer, "C2PA signer"),
    )
    chain = [StepSpec.model_validate(s.model_dump()) for s in snap.chain]
    result = write_outputs(images[chosen], chain, ctx, str(folder / "final"))
    output = Path(result.path).read_bytes()
    where, published, notes = published_bytes(entry, chosen)
    if snap.encode.get("c2pa"):
        notes.append("the chain signs a C2PA manifest: its signature time differs on every run, so bytes cannot match")
    return ReplayReport(row_id=row_id, entry=entry, generation_from=generation_from,
                        provider_calls=0 if generation_from == "store" else 1, output_path=result.path,
                        output_sha256=content_hash(output), published_from=where,
                        published_sha256=content_hash(published) if published is not None else None, notes=notes)
