"""Publish: deliver the chosen image to the client's target, exactly once.

The ledger is asked first (a generation key already published is not sent
again), then the target itself (a crash between upload and ledger write left
the item there), and only then is a new item created.
"""

from __future__ import annotations

from prefect import task
from prefect.tasks import exponential_backoff

from blocks.ledger import Ledger
from blocks.targets.base import PublishTarget
from models import PublishItem, PublishReceipt
from tasks.retry import retry_transient_only


@task(
    name="publish",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient_only,
)
async def publish_item(item: PublishItem, target: PublishTarget, ledger: Ledger) -> PublishReceipt:
    done = ledger.published_for_generation(item.generation_key)
    if done and done.published_url:
        return PublishReceipt(target=done.target or target.target_name, url=done.published_url, remote_ids=done.remote_ids, already_existed=True)
    existing = await target.find_existing(item)
    if existing:
        return existing
    return await target.publish(item)
