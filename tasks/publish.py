"""Publish: deliver the chosen image to the client's target, exactly once.

The ledger is asked first (the same client's publish of the same generation key
to the same target instance is not sent again; another client's, or another
bucket's or site's, never counts), then the target itself: every target's `publish`
looks the key up on the target before creating anything, so a crash between
upload and ledger write, a retry or a duplicated webhook never makes a second
item, and a half-done publish (image uploaded, no post) is finished rather than
started over. An asset published before at the same target (another recipe, other
bytes) has its entry there replaced (`replaces`: the ledger's current row's remote
ids), and recording the new row marks the earlier one `replaced`. Only failures a
retry can help (429, 5xx, timeouts) are retried.

`withdraw_published_row` is the way back: a published image whose source was unpublished
or deleted is taken down at its target and its ledger row marked `withdrawn`.
"""

from __future__ import annotations

import asyncio

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from brandforge.blocks.ledger import Ledger
from brandforge.blocks.targets.base import PublishTarget
from brandforge.models import LedgerEntry, PublishItem, PublishReceipt, Withdrawal
from brandforge.tasks.retry import retry_transient_only


def receipt_from_ledger(item: PublishItem, target: PublishTarget, ledger: Ledger) -> PublishReceipt | None:
    """The ledger's record of this client publishing this generation key to this very target instance, if any."""
    done = ledger.published_for_generation(item.client, target.target_key, item.publish_key)
    if not done or not done.published_url:
        return None
    return PublishReceipt(target=target.target_name, url=done.published_url, remote_ids=done.remote_ids, already_existed=True)


# Calls to a target: retried only when a retry can help (429, 5xx, timeouts).
TARGET_RETRIES = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
                      retry_condition_fn=retry_transient_only)


@task(name="publish", cache_policy=NO_CACHE, **TARGET_RETRIES)
def publish_item(item: PublishItem, target: PublishTarget, ledger: Ledger) -> PublishReceipt:
    """`publish` as a task run; sync for the reason `generate_images` is (tasks/generate.py)."""
    return asyncio.run(publish(item, target, ledger))


async def publish(item: PublishItem, target: PublishTarget, ledger: Ledger) -> PublishReceipt:
    """Publish one item unless the ledger says this target has it; an asset's earlier entry is replaced."""
    logger = get_run_logger()
    recorded = receipt_from_ledger(item, target, ledger)
    if recorded:
        logger.info("%s: generation %s already published at %s (ledger)", item.name, item.publish_key[:12], recorded.url)
        return recorded
    # The asset's current entry at this target (an earlier recipe's, or earlier bytes'): replaced, not added to.
    current = ledger.current_publish(item.client, target.target_key, item.source_uri)
    replaces = current[1].remote_ids or None if current else None
    receipt = await target.publish(item, replaces=replaces)
    if current:
        logger.info("%s: republished to %s at %s, replacing ledger row %s", item.name, receipt.target, receipt.url, current[0])
    elif receipt.already_existed:
        logger.info("%s: generation %s already on %s at %s; not published again", item.name, item.publish_key[:12], receipt.target, receipt.url)
    else:
        logger.info("%s: published to %s at %s", item.name, receipt.target, receipt.url)
    return receipt


@task(name="withdraw", **TARGET_RETRIES)
async def withdraw_published_row(row_id: int, row: LedgerEntry, target: PublishTarget, ledger: Ledger, reason: str,
                                 delete: bool) -> Withdrawal:
    """Take one published image down at its target (unpublish, or delete) and mark its ledger row withdrawn.
    A row published to another target than this one is left as it is, and says so."""
    name = row.source_uri.rsplit("/", 1)[-1]
    kept = Withdrawal(name=name, source_uri=row.source_uri, published_url=row.published_url, withdrawn=False)
    if row.target_key != target.target_key:
        return kept.model_copy(update={"detail": f"published to another {row.target or ''} target than the profile's "
                                                 "current one: left as it is"})
    try:
        done = await target.withdraw(row.remote_ids, delete=delete)
    except NotImplementedError as exc:
        return kept.model_copy(update={"detail": str(exc)})
    marked = ledger.mark_withdrawn(row_id, f"{reason}: {done}")
    get_run_logger().info("%s: %s (%s)", name, done, reason)
    return kept.model_copy(update={"withdrawn": True, "detail": done if marked else f"{done}; already marked withdrawn"})
