"""The publish target protocol: CMS and storage connectors as Prefect blocks.

A target publishes exactly once per generation key: `find_existing(key)` asks
the target itself whether the image is already there (so a crash between
upload and post, a retry or a rerun never creates a second item), and
`publish(item, replaces)` creates it — finishing a half-done publish where it can,
and replacing the asset's earlier entry (`replaces`) when it was published before.
"""

from __future__ import annotations

from abc import ABC

import re
from pathlib import Path
from typing import ClassVar

from prefect.blocks.core import Block

from brandforge.models import PublishItem, PublishReceipt, stable_hash


def keyed_filename(item: PublishItem, key_chars: int = 16) -> str:
    """A target-safe file name for an item that carries its generation key, so a half-done publish is found."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(item.name).stem).strip("-") or "image"
    return f"{stem[:80]}-{item.publish_key[:key_chars]}{Path(item.image_path).suffix.lower() or '.jpg'}"


class PublishTarget(Block, ABC):
    """Base class of publish targets; not registered on its own."""

    _block_type_name = "Publish Target"
    _description = "Base of brandforge's publish targets."

    target_name: ClassVar[str] = "target"

    def destination(self) -> str:
        """Where this instance publishes (a site, a bucket and folder, a gallery folder), no secret in it."""
        raise NotImplementedError

    @property
    def target_key(self) -> str:
        """Identity of this target instance: a publish is reused as a receipt only for the same one."""
        return stable_hash({"target": self.target_name, "destination": self.destination()})

    async def find_existing(self, item: PublishItem) -> PublishReceipt | None:
        """The receipt of an earlier publish of `item.publish_key`, if the target has one."""
        raise NotImplementedError

    async def publish(self, item: PublishItem, replaces: dict | None = None) -> PublishReceipt:
        """Put `item` on the target, once. `replaces`: the remote ids of the asset's current entry here (the
        ledger's; the asset was published before with another recipe or other bytes): the target replaces
        that entry rather than adding one, and a rerun after a crash anywhere in between still ends with one."""
        raise NotImplementedError

    async def withdraw(self, remote_ids: dict, *, delete: bool) -> str:
        """Take down what a receipt's `remote_ids` name (a source was unpublished or deleted): unpublish it,
        or delete it; says what was done. Targets that cannot raise NotImplementedError."""
        raise NotImplementedError(f"the {self.target_name} target cannot withdraw what it published")
