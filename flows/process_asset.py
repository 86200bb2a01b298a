"""process_asset: one source image through every stage, ending in one ledger row.

The flow body is the DAG: profile → load → plan (route, ledger lookup,
prompt; an asset already done is skipped) → generate (from the generation
store when these pixels were paid for already) → post-process → gates →
review when borderline → quarantine or publish → record. Each stage task
returns a typed result (`LoadedAsset`, `AssetPlan`, `GenerationResult`,
`Candidate`s, `GateDecision`, `PublishReceipt`); `tasks.ledger.ledger_entry`
builds the ledger row from them in one place.

Every stage is a retryable task. Whatever goes wrong — a corrupt file, a bad
recipe value, a provider refusal, a publish error — ends as a recorded
`failed: <stage>: <reason>` for this asset, never as a crashed catalog run.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prefect import flow, get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run
from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket
from pydantic import ValidationError

from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.ledger import BudgetExceeded, Ledger
from brandforge.blocks.url_guard import client_url_allow
from brandforge.flows.run_state import asset_final_state
from brandforge.models import (
    AssetOutcome,
    AssetPlan,
    AssetRef,
    BrandforgeError,
    Candidate,
    GateThresholds,
    InvalidInput,
    LedgerEntry,
    LoadedAsset,
    PublishItem,
    describe_validation_error,
)
from brandforge.tasks.archive import handle_source
from brandforge.tasks.gates.decide import GateDecision, GateReview, apply_review, quarantine_candidates, score_candidates
from brandforge.tasks.generate import JobAccount, generate_images
from brandforge.tasks.generation_store import GenerationStore
from brandforge.tasks.ledger import asset_outcome, ledger_entry, record_outcome
from brandforge.tasks.load import load_asset
from brandforge.tasks.postprocess.chain import ChainContext, postprocess_candidates
from brandforge.tasks.postprocess.encode import CONTENT_TYPE
from brandforge.tasks.profiles import load_profile
from brandforge.tasks.prompt import plan_asset
from brandforge.tasks.publish import publish_item
from brandforge.tasks.snapshot import provenance_metadata


class StageFailed(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time a stage and turn any failure into `StageFailed(name, reason)`."""
    started = time.monotonic()
    try:
        yield
    except StageFailed:
        raise
    except BudgetExceeded as exc:  # checked as the job is about to be submitted, reported as its own stage
        raise StageFailed("budget", str(exc)) from exc
    except ValidationError as exc:
        raise StageFailed(name, describe_validation_error(exc)) from exc
    except BrandforgeError as exc:
        raise StageFailed(name, str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - anything else is still this asset's failure, not the run's
        raise StageFailed(name, f"{type(exc).__name__}: {exc}") from exc
    finally:
        timings[name] = round(time.monotonic() - started, 4)


def wait_for_review(decision: GateDecision, gates: GateThresholds) -> GateReview | None:
    """Pause this flow run until a person answers the GateReview form; None when nobody does in time."""
    try:
        return pause_flow_run(
            wait_for_input=GateReview.with_initial_data(description=decision.review_prompt()),
            timeout=gates.review_timeout_s, poll_interval=max(1, min(5, gates.review_timeout_s // 4)),
        )
    except FlowPauseTimeout:
        return None


def checked_profile(asset: AssetRef, profile: ClientProfile | None) -> ClientProfile:
    """The client's profile (loaded by name when not given), refused for another client's asset."""
    profile = profile or load_profile(asset.client)
    if profile.client_id != asset.client:
        raise InvalidInput(f"asset of client {asset.client!r} cannot run with the profile of another client")
    return profile


def chain_context(loaded: LoadedAsset, plan: AssetPlan, profile: ClientProfile) -> ChainContext:
    """What the post-processing steps need, and the provenance every output embeds."""
    return ChainContext(
        seed=plan.request.seed or 0, client=loaded.client, palette=tuple(profile.palette),  # type: ignore[union-attr]
        logo_path=profile.logo_path, source_path=loaded.path, output_format=plan.recipe.output_format,
        metadata=provenance_metadata(plan.params, generation_key=plan.generation_key, source_key=loaded.source_key,
                                     provider=plan.provider, model=plan.model, client=loaded.client),
        refiner=profile.refiner, c2pa_signer=profile.c2pa_signer,
    )


def job_account(asset: AssetRef, plan: AssetPlan, profile: ClientProfile, run_key: str | None) -> JobAccount:
    """Every job is journalled (and its price reserved against the budgets) in the client's ledger."""
    return JobAccount(
        ledger=profile.ledger, client=asset.client, run_key=run_key, generation_key=plan.generation_key,
        source_uri=asset.uri, run_budget_usd=profile.run_budget_usd, monthly_budget_usd=profile.monthly_budget_usd,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
    )


def publish_item_for(asset: AssetRef, loaded: LoadedAsset, plan: AssetPlan, best: Candidate) -> PublishItem:
    return PublishItem(
        client=asset.client, name=asset.name, generation_key=plan.generation_key, output_key=plan.output_key,  # type: ignore[arg-type]
        image_path=best.path, source_uri=asset.uri, source_key=loaded.source_key, source_path=loaded.path,
        title=Path(asset.name).stem, alt_text=plan.caption or plan.request.prompt,  # type: ignore[union-attr]
        content_type=CONTENT_TYPE[Path(best.path).suffix.lstrip(".").replace("jpg", "jpeg")],
        scores={s.gate: s.score for s in best.scores}, params=plan.params, extra_outputs=best.extra_outputs,
    )


@flow(name="process-asset", flow_run_name="{asset.client}/{asset.name}", log_prints=False)
def process_asset(
    asset: AssetRef,
    profile: ClientProfile | None = None,
    source_folder: str | None = None,
    work_dir: str = ".brandforge/work",
    run_key: str | None = None,
    fail_run_on_failure: bool = False,
) -> AssetOutcome:
    """Take one source through the whole pipeline and record how it ended.

    `profile` is the client's (loaded by name when absent); `source_folder` reads the source from
    that folder instead of the profile's storage. The stages that fetch URLs (load, generate, post-process,
    publish) run with the profile's own `url_allow` added to the URL guard's. In the run's parameters a profile shows only
    its name (see `ClientProfile.ser_model`): no block setting or credential reaches the API.
    A borderline asset pauses this run for a person's review (see `wait_for_review`).

    `fail_run_on_failure` (set by the on-new-asset deployment, where this run is all there is to see):
    the final state's message says how the asset ended and the run is Failed when it failed
    (`flows/run_state.py`); the result is the AssetOutcome either way. Called from a catalog run,
    it stays off: the asset's outcome is the catalog's to count."""
    return finish(asset_pipeline(asset, profile, source_folder, work_dir, run_key, defer_review=False), fail_run_on_failure)


def asset_pipeline(
    asset: AssetRef,
    profile: ClientProfile | None,
    source_folder: str | None,
    work_dir: str,
    run_key: str | None,
    *,
    defer_review: bool,
) -> AssetOutcome:
    """The stages of one asset, each a task of whichever run calls this: the `process-asset` flow
    for one asset, or `catalog_refresh`'s per-asset task, where a subflow per asset would cost
    more than the asset's own work (issue 11's profile). With `defer_review`, a borderline asset
    ends as `review` without a ledger row, and the catalog hands it to a `process-asset` run of
    its own that waits for the person (the generation is in the store: no second payment).
    The stage tasks cache nothing (`NO_CACHE`): the ledger and the generation store are what make a rerun
    cheap, and hashing every stage's inputs cost CPU on each of them."""
    logger = get_run_logger()
    started = time.monotonic()
    timings: dict[str, float] = {}
    storage: LocalFileSystem | S3Bucket | None = LocalFileSystem(basepath=source_folder) if source_folder else None
    loaded = plan = generation = candidates = decision = quarantined = receipt = failure = None
    try:
        with stage("profile", timings):
            profile = checked_profile(asset, profile)
        with stage("load", timings), client_url_allow(profile.url_allow):
            loaded = load_asset(asset, storage or profile.source, work_dir)
        with stage("route", timings):
            plan = plan_asset(loaded, profile)
        if plan.done:
            logger.info("%s already %s for these bytes and this recipe; nothing to do", asset.name, plan.done.state)
            if plan.done.state == "published":  # a crash after the row may have left the source undone
                settle_source(asset, storage, profile, plan.done)
            return asset_outcome(asset, plan.done, seconds=round(time.monotonic() - started, 3), skipped=True)
        # The routed provider, model, gates and publish target.
        profile = profile.routed(plan.provider_ref, plan.model, plan.gates, plan.target_ref)
        # Final outputs by output key: a changed chain writes beside, never over, the earlier outputs.
        out_dir = Path(work_dir) / asset.client / loaded.source_key[:16] / plan.output_key[:16]  # type: ignore[index]
        with stage("generate", timings), client_url_allow(profile.url_allow):
            # From the generation store when these pixels were paid for already. Called, not `.submit`ted:
            # a submit would need a free thread of the catalog's pool, which every asset waiting here holds
            # (a deadlock at the pool's size).
            generation = generate_images(
                plan.request, profile.provider, str(out_dir), account=job_account(asset, plan, profile, run_key),
                store_dir=str(GenerationStore.for_client(work_dir, asset.client).root), generation_key=plan.generation_key,
            )
        with stage("postprocess", timings), client_url_allow(profile.url_allow):
            candidates = postprocess_candidates(generation.images, plan.recipe.chain, chain_context(loaded, plan, profile),
                                                str(out_dir))
        with stage("gates", timings):
            decision = score_candidates(candidates, profile, plan.recipe, loaded.path, asset.uri)
        if decision.outcome == "review" and defer_review:
            logger.info("%s: %s; handed to a review run, the catalog goes on", asset.name, decision.reason)
            return AssetOutcome(client=asset.client, source_uri=asset.uri, name=asset.name, state="review",
                                reason=decision.reason, source_key=loaded.source_key, generation_key=plan.generation_key,
                                output_key=plan.output_key, output_uris=[c.path for c in candidates],
                                cost_usd=generation.cost_usd if not generation.from_store else 0.0,
                                seconds=round(time.monotonic() - started, 3))
        if decision.outcome == "review":
            logger.info("%s: %s; waiting for a review in the Prefect UI", asset.name, decision.reason)
            decision = apply_review(decision, wait_for_review(decision, profile.gates), profile.gates)
        if decision.outcome == "quarantine":
            with stage("quarantine", timings):
                # Kept, not deleted: the variants and their scores go where a person can look.
                quarantined = quarantine_candidates(decision, Path(work_dir).parent / "quarantine" / out_dir.relative_to(work_dir))
        elif decision.outcome == "publish":
            with stage("publish", timings), client_url_allow(profile.url_allow):
                item = publish_item_for(asset, loaded, plan, decision.chosen)  # type: ignore[arg-type]
                receipt = publish_item(item, profile.target, profile.ledger)
    except StageFailed as exc:
        logger.warning("%s failed at %s: %s", asset.name, exc.stage, exc.reason)
        failure = f"{exc.stage}: {exc.reason}"
    timings["total"] = round(time.monotonic() - started, 4)
    row = ledger_entry(asset, loaded=loaded, plan=plan, generation=generation, candidates=candidates, decision=decision,
                       quarantined=quarantined, receipt=receipt, failure=failure, timings=timings,
                       target_key=profile.target.target_key if receipt is not None else None,
                       generation_store=str(GenerationStore.for_client(work_dir, asset.client).root.resolve()))
    record_outcome(profile.ledger if isinstance(profile, ClientProfile) else Ledger(), row)
    if row.state == "published":
        settle_source(asset, storage, profile, row)  # only now, with the publish on record
    return asset_outcome(asset, row, seconds=timings["total"])


def finish(outcome: AssetOutcome, as_final_state: bool) -> AssetOutcome:
    """The outcome, or (as_final_state) the run's final state carrying it."""
    if not as_final_state:
        return outcome
    return asset_final_state(outcome, str(flow_run.id) if flow_run.id else None)  # type: ignore[return-value]


def settle_source(asset: AssetRef, storage: LocalFileSystem | S3Bucket | None, profile: ClientProfile, row: LedgerEntry) -> None:
    """Archive or delete a published source as the profile says; a failure here is logged, the publish stands."""
    if profile.source_handling != "leave":
        handle_source(asset, storage or profile.source, profile.source_handling, profile.archive_prefix,
                      row.generation_key or "", row.published_url, return_state=True)
