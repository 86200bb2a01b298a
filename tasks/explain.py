"""Explain a routing decision: what `brandforge route --explain` prints for one asset.

It runs the same code a catalog run does — load (the source's bytes and size), route (every rule, and
why each did or did not match), record pins, template choice, prompt, seed, request — and stops before
anything is paid: no provider call, no ledger write.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket

from brandforge.blocks.client_profile import ClientProfile
from brandforge.models import AssetRef, InvalidInput, LoadedAsset
from brandforge.tasks.load import list_catalog, load_asset
from brandforge.tasks.prompt import choose_seed, decide, make_request, write_prompt


def find_asset(ref: str, profile: ClientProfile, storage: LocalFileSystem | S3Bucket | None) -> AssetRef:
    """The catalog's asset `ref` names (its URI, its path in the catalog, or its file name), with its record;
    a URI outside the listing is taken as it is (without a record)."""
    assets = list_catalog.fn(storage, profile.client_id, exclude_prefix=profile.archive_prefix) if storage else []
    for match in (lambda a: a.uri == ref, lambda a: a.name == ref, lambda a: Path(a.name).name == ref):
        found = [a for a in assets if match(a)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidInput(f"{ref!r} names {len(found)} assets of client {profile.client_id}: "
                               f"{[a.name for a in found[:5]]}; give its path in the catalog")
    if "://" in ref:
        return AssetRef(client=profile.client_id, uri=ref, name=ref.rsplit("/", 1)[-1])
    raise InvalidInput(f"no asset {ref!r} in client {profile.client_id}'s catalog"
                       + ("" if storage else " (the profile has no source storage: give --source FOLDER or a URI)"))


def describe_record(loaded: LoadedAsset) -> str:
    if loaded.record is None:
        return "no record (subject from the file name)"
    fields = loaded.record.model_dump(exclude={"origin"}, exclude_defaults=True)
    shown = ", ".join(f"{k} {v!r}" if isinstance(v, str) else f"{k} {v}" for k, v in fields.items())
    return f"{loaded.record.origin or 'record'}: {shown or 'empty'}"


def explain(ref: str, profile: ClientProfile, *, storage: LocalFileSystem | S3Bucket | None = None,
            now: datetime | None = None) -> str:
    """The routing decision for one asset, as lines a person reads."""
    storage = storage or profile.source
    asset = find_asset(ref, profile, storage)
    with tempfile.TemporaryDirectory(prefix="bf-explain-") as work:
        loaded = load_asset.fn(asset, storage, work)
    planned = decide(loaded, profile)
    route, recipe = planned.route, planned.recipe
    block = profile.provider_block(route.provider)
    model = route.model or block.model
    notes = profile.ledger.regeneration_notes(loaded.client, loaded.source_key, planned.recipe_key)
    when = now or datetime.now(timezone.utc)
    prompt = write_prompt(loaded, recipe, profile, [n for n in notes if n.strip()], template=planned.template, now=when)
    seed = choose_seed(loaded, recipe, profile, planned.recipe_key)
    request = make_request(loaded, recipe, profile, notes, prompt=prompt, seed=seed)
    cost = block.price_per_image_usd * request.batch_size
    done = profile.ledger.finished(loaded.client, loaded.source_key, planned.recipe_key)

    width = max(len(c.rule) for c in route.trace) if route.trace else 0
    marks = {"matched": "✓", "no match": "✗", "not reached": "·"}
    lines = [f"asset     {asset.name}  ({asset.uri}, {loaded.width}x{loaded.height})",
             f"record    {describe_record(loaded)}",
             "rules" + ("     (none: the default recipe on the default provider)" if not route.trace else "")]
    for check in route.trace:
        lines.append(f"  {marks[check.outcome]} {check.rule:<{width}}  {check.outcome}" + (f": {check.reason}" if check.reason else ""))
    lines.append(f"decided   {'rule ' + route.rule if route.rule else 'no rule matched: the default route'}")
    chain = " → ".join(s.step for s in recipe.chain) or "(none)"
    lines.append(f"recipe    {recipe.name}  (style {recipe.style or profile.default_style!r}; chain: {chain})")
    lines.append(f"provider  {route.provider} → {block.provider_name}, model {model}"
                 + ("  (cost-aware)" if route.cost_aware else ""))
    lines += [f"          {n}" for n in route.notes]
    if route.gates:
        lines.append(f"gates     {route.gates}")
    if recipe.loras:
        lines.append("loras     " + ", ".join(f"{lo.weights} ×{lo.scale:g}" for lo in recipe.loras))
    if recipe.control:
        made = (f"the reference {recipe.control.image}" if recipe.control.image else
                f"computed from the source ({'Canny' if recipe.control.kind == 'edges' else profile.control_models.get(recipe.control.kind, 'no model')})")
        lines.append(f"control   {recipe.control.kind} ×{recipe.control.scale:g}, {made}")
    if route.target != "default":
        lines.append(f"target    {route.target} → {profile.target_block(route.target).target_name}")
    lines.append(f"template  {prompt.template or 'prompt_template (the profile’s)'}")
    lines.append(f"prompt    {prompt.text}")
    if prompt.caption:
        lines.append(f"caption   {prompt.caption}")
    policy = {"derived": "derived from the source's content key" if recipe.seed is None else "the recipe's",
              "fixed": "fixed (the recipe's or the record's pin)",
              "random": "random, drawn once and recorded"}[recipe.seed_policy]
    if recipe.seed_policy == "random" and profile.ledger.first_seed(loaded.client, loaded.source_key, planned.recipe_key) is None:
        policy += " (not drawn yet: this is one draw; the first run records its own)"
    lines.append(f"seed      {request.seed}  ({policy})")
    lines.append(f"cost      ${cost:.4f}  ({request.batch_size} image(s) × ${block.price_per_image_usd:g})")
    lines.append(f"clock     {when.isoformat(timespec='seconds')} ({profile.timezone})")
    if done is not None:
        lines.append(f"ledger    already {done.state} for these bytes and this recipe: a run skips it")
    else:
        lines.append("ledger    not done for these bytes and this recipe: a run generates it")
    return "\n".join(lines)
