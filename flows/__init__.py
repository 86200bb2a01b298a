"""Prefect flows of brandforge: the pipeline, readable top to bottom.

- `process_asset`: one source through load → route → prompt → generate →
  post-process → gates → publish → record.
- `catalog_refresh`: list a client's catalog and fan `process_asset` out.
"""

from brandforge.flows.catalog_refresh import catalog_refresh
from brandforge.flows.process_asset import process_asset

__all__ = ["catalog_refresh", "process_asset"]
