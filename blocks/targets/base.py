"""The publish target protocol: CMS and storage connectors as Prefect blocks.

A target publishes exactly once per generation key: `find_existing(key)` asks
the target itself whether the image is already there (so a crash between
upload and post, a retry or a rerun never creates a second item), and
`publish(item)` creates it — finishing a half-done publish where it can.
"""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block

from models import PublishItem, PublishReceipt


class PublishTarget(Block):
    """Base class of publish targets; not registered on its own."""

    _block_type_name = "Publish Target"
    _description = "Base of brandforge's publish targets."

    target_name: ClassVar[str] = "target"

    async def find_existing(self, item: PublishItem) -> PublishReceipt | None:
        """The receipt of an earlier publish of `item.generation_key`, if the target has one."""
        raise NotImplementedError

    async def publish(self, item: PublishItem) -> PublishReceipt:
        raise NotImplementedError
