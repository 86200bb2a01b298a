"""Prefect blocks of brandforge: configured connectors with their methods.

`prefect block register -m brandforge.blocks` registers every block type listed here.
"""

from brandforge.blocks.aesthetic import AestheticModel
from brandforge.blocks.c2pa_signer import C2paSigner
from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.ledger import Ledger
from brandforge.blocks.providers.base import ImageProvider
from brandforge.blocks.providers.diffusers_local import DiffusersProvider
from brandforge.blocks.providers.fal import FalProvider
from brandforge.blocks.providers.leonardo import LeonardoProvider
from brandforge.blocks.providers.local_engine import LocalEngine
from brandforge.blocks.providers.openai_images import OpenAIImagesProvider
from brandforge.blocks.providers.replicate import ReplicateProvider
from brandforge.blocks.providers.stability import StabilityProvider
from brandforge.blocks.refiners import ImageRefiner, ReplicateRefiner, StabilityRefiner
from brandforge.blocks.targets.base import PublishTarget
from brandforge.blocks.targets.gallery import LocalGallery
from brandforge.blocks.targets.s3 import S3Target
from brandforge.blocks.targets.strapi import StrapiSite
from brandforge.blocks.targets.wordpress import WordPressSite
from brandforge.blocks.triggers import SharedBucket

__all__ = [
    "AestheticModel", "C2paSigner", "ClientProfile", "ImageProvider", "ImageRefiner", "Ledger", "LocalEngine",
    "LocalGallery", "PublishTarget", "S3Target", "StrapiSite", "WordPressSite", "ReplicateRefiner", "StabilityRefiner",
    "DiffusersProvider", "FalProvider", "LeonardoProvider", "OpenAIImagesProvider", "ReplicateProvider",
    "StabilityProvider", "SharedBucket",
]
