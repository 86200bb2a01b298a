"""Prefect blocks of brandforge: configured connectors with their methods.

`prefect block register -m blocks` registers every block type listed here.
"""

from blocks.client_profile import ClientProfile
from blocks.ledger import Ledger
from blocks.providers.base import ImageProvider
from blocks.providers.local_engine import LocalEngine
from blocks.targets.base import PublishTarget
from blocks.targets.gallery import LocalGallery

__all__ = ["ClientProfile", "ImageProvider", "Ledger", "LocalEngine", "LocalGallery", "PublishTarget"]
