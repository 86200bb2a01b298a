"""Prefect blocks of brandforge: configured connectors with their methods.

`prefect block register -m blocks` registers every block type listed here.
"""

from blocks.aesthetic import AestheticModel
from blocks.c2pa_signer import C2paSigner
from blocks.client_profile import ClientProfile
from blocks.ledger import Ledger
from blocks.providers.base import ImageProvider
from blocks.providers.diffusers_local import DiffusersProvider
from blocks.providers.fal import FalProvider
from blocks.providers.leonardo import LeonardoProvider
from blocks.providers.local_engine import LocalEngine
from blocks.providers.openai_images import OpenAIImagesProvider
from blocks.providers.replicate import ReplicateProvider
from blocks.providers.stability import StabilityProvider
from blocks.refiners import ImageRefiner, ReplicateRefiner, StabilityRefiner
from blocks.targets.base import PublishTarget
from blocks.targets.gallery import LocalGallery
from blocks.targets.s3 import S3Target
from blocks.targets.strapi import StrapiSite
from blocks.targets.wordpress import WordPressSite

__all__ = [
    "AestheticModel", "C2paSigner", "ClientProfile", "ImageProvider", "ImageRefiner", "Ledger", "LocalEngine",
    "LocalGallery", "PublishTarget", "S3Target", "StrapiSite", "WordPressSite", "ReplicateRefiner", "StabilityRefiner",
    "DiffusersProvider", "FalProvider", "LeonardoProvider", "OpenAIImagesProvider", "ReplicateProvider",
    "StabilityProvider",
]
