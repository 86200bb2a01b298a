"""Prefect flows of brandforge: the pipeline, readable top to bottom.

- `process_asset`: one source through load → route → prompt → generate →
  post-process → gates → publish → record.
- `catalog_refresh`: list a client's catalog and fan `process_asset` out.
- `withdraw_published`: take down what was published for sources unpublished or deleted.
"""

from brandforge.flows.catalog_refresh import catalog_refresh
from brandforge.flows.process_asset import process_asset
from brandforge.flows.withdraw import withdraw_published

__all__ = ["catalog_refresh", "process_asset", "withdraw_published"]
