"""process_asset: one source image through every stage, ending in one ledger row.

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

from blocks.client_profile import ClientProfile
from blocks.ledger import BudgetExceeded, Ledger
from models import (
    AssetOutcome,
    AssetRef,
    BrandforgeError,
    Candidate,
    GateThresholds,
    InvalidInput,
    LedgerEntry,
    PublishItem,
    describe_validation_error,
)
from tasks.gates.decide import GateDecision, GateReview, apply_review, quarantine_candidates, score_candidates
from tasks.generate import JobAccount, generate_images
from tasks.ledger import find_finished, record_outcome
from tasks.load import load_asset
from tasks.postprocess.chain import ChainContext, postprocess_candidate
from tasks.postprocess.encode import CONTENT_TYPE
from tasks.profiles import load_profile
from tasks.archive import handle_source
from tasks.prompt import build_request
from tasks.publish import publish_item
from tasks.route import route_asset


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


@flow(name="process-asset", flow_run_name="{asset.client}/{asset.name}", log_prints=False)
def process_asset(
    asset: AssetRef,
    profile: ClientProfile | None = None,
    source_folder: str | None = None,
    work_dir: str = ".brandforge/work",
    run_key: str | None = None,
) -> AssetOutcome:
    """Take one source through the whole pipeline and record how it ended.

    `profile` is the client's (loaded by name when absent); `source_folder` reads the source from
    that folder instead of the profile's storage. In the run's parameters a profile shows only
    its name (see `ClientProfile.ser_model`): no block setting or credential reaches the API."""
    logger = get_run_logger()
    started = time.monotonic()
    timings: dict[str, float] = {}
    row = LedgerEntry(client=asset.client, source_uri=asset.uri, state="failed")
    ledger = profile.ledger if profile else Ledger()
    storage: LocalFileSystem | S3Bucket | None = LocalFileSystem(basepath=source_folder) if source_folder else None
    try:
        with stage("profile", timings):
            profile = profile or load_profile(asset.client)
            ledger = profile.ledger
            if profile.client_id != asset.client:
                raise InvalidInput(f"asset of client {asset.client!r} cannot run with the profile of another client")
        with stage("load", timings):
            loaded = load_asset(asset, storage or profile.source, work_dir)
            row.source_key = loaded.source_key
        with stage("route", timings):
            recipe, recipe_key = route_asset(loaded, profile)
            row.recipe, row.recipe_key = recipe.name, recipe_key
            done = find_finished(ledger, asset.client, loaded.source_key, recipe_key)
        if done:
            logger.info("%s already %s for these bytes and this recipe; nothing to do", asset.name, done.state)
            if done.state == "published" and profile.source_handling != "leave":  # a crash after the row may have left it undone
                handle_source(asset, storage or profile.source, profile.source_handling, profile.archive_prefix,
                              done.generation_key or "", done.published_url, return_state=True)
            return AssetOutcome(
                client=asset.client, source_uri=asset.uri, name=asset.name, state="skipped",
                reason=f"already {done.state}", source_key=loaded.source_key, recipe=recipe.name, recipe_key=recipe_key,
                generation_key=done.generation_key, output_uris=done.output_uris, published_url=done.published_url,
                scores=done.scores, seconds=round(time.monotonic() - started, 3),
            )
        with stage("prompt", timings):
            review_notes = ledger.regeneration_notes(asset.client, loaded.source_key, recipe_key)
            request, generation_key = build_request(loaded, recipe, recipe_key, profile, review_notes)
            row.generation_key, row.seed = generation_key, request.seed
            row.params = {**request.model_dump(exclude={"source_image"}), "recipe": recipe.name, "style": recipe.style or profile.default_style}
            row.provider, row.model = profile.provider.provider_name, profile.provider.model
        out_dir = Path(work_dir) / asset.client / loaded.source_key[:16] / generation_key[:16]
        with stage("generate", timings):
            # Every job is journalled (and its price reserved against the budgets) in the client's ledger.
            account = JobAccount(
                ledger=ledger, client=asset.client, run_key=run_key, generation_key=generation_key, source_uri=asset.uri,
                run_budget_usd=profile.run_budget_usd, monthly_budget_usd=profile.monthly_budget_usd,
                flow_run_id=str(flow_run.id) if flow_run.id else None,
            )
            # Async tasks (provider and target I/O) run on Prefect's event loop via submit().
            result = generate_images.submit(request, profile.provider, str(out_dir), account=account).result()
            row.job_ids, row.cost_usd = result.job_ids, result.cost_usd
        with stage("postprocess", timings):
            ctx = ChainContext(
                seed=request.seed or 0, client=asset.client, palette=tuple(profile.palette), logo_path=profile.logo_path,
                source_path=loaded.path, output_format=recipe.output_format,
                metadata={**row.params, "generation_key": generation_key, "source_key": loaded.source_key,
                          "provider": row.provider, "model": row.model, "client": asset.client},
                refiner=profile.refiner, c2pa_signer=profile.c2pa_signer,
            )
            candidates = []
            for i, raw in enumerate(result.images):
                # One file per format: the main one, plus extras (e.g. other aspect ratios) by label.
                final = postprocess_candidate(raw, recipe.chain, ctx, str(out_dir / f"final-{i}"))
                candidates.append(Candidate(index=i, raw_path=raw, path=final.path, extra_outputs=final.extra_outputs))
            row.output_uris = [c.path for c in candidates]
        with stage("gates", timings):
            decision = score_candidates(candidates, profile, recipe, loaded.path, asset.uri)
        if decision.outcome == "review":
            logger.info("%s: %s; waiting for a review in the Prefect UI", asset.name, decision.reason)
            decision = apply_review(decision, wait_for_review(decision, profile.gates), profile.gates)
        row.scores = decision.ledger_scores()
        if decision.outcome == "quarantine":
            with stage("quarantine", timings):
                # Kept, not deleted: the variants and their scores go where a person can look.
                row.output_uris = quarantine_candidates(decision, Path(work_dir).parent / "quarantine" / out_dir.relative_to(work_dir))
            row.state, row.reason = "quarantined", decision.reason
        elif decision.outcome == "regenerate":
            row.state, row.reason = "failed", decision.reason  # `failed` is not final: the next run tries again
        else:
            best = decision.chosen
            row.phash = decision.phashes.get(best.index)
            with stage("publish", timings):
                item = PublishItem(
                    client=asset.client, name=asset.name, generation_key=generation_key, image_path=best.path,
                    source_uri=asset.uri, source_key=loaded.source_key, source_path=loaded.path, title=Path(asset.name).stem,
                    alt_text=request.prompt, content_type=CONTENT_TYPE[Path(best.path).suffix.lstrip(".").replace("jpg", "jpeg")],
                    scores={s.gate: s.score for s in best.scores}, params=row.params, extra_outputs=best.extra_outputs,
                )
                receipt = publish_item.submit(item, profile.target, ledger).result()
                row.state, row.target, row.target_key = "published", receipt.target, profile.target.target_key
                row.published_url, row.remote_ids = receipt.url, receipt.remote_ids
    except StageFailed as exc:
        logger.warning("%s failed at %s: %s", asset.name, exc.stage, exc.reason)
        row.state, row.reason = "failed", f"{exc.stage}: {exc.reason}"
    row.timings = {**timings, "total": round(time.monotonic() - started, 4)}
    record_outcome(ledger, row)
    if row.state == "published" and profile is not None and profile.source_handling != "leave":
        # Only now, with the publish on record; a failure here is logged, the publish stands.
        handle_source(asset, storage or profile.source, profile.source_handling, profile.archive_prefix,
                      row.generation_key or "", row.published_url, return_state=True)
    return AssetOutcome(
        client=asset.client, source_uri=asset.uri, name=asset.name, state=row.state,  # type: ignore[arg-type]
        reason=row.reason, source_key=row.source_key, recipe=row.recipe, recipe_key=row.recipe_key,
        generation_key=row.generation_key, output_uris=row.output_uris, published_url=row.published_url,
        scores=row.scores, cost_usd=row.cost_usd, seconds=row.timings["total"],
    )

