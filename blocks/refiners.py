"""Refiners: the refine capability the post-processing chain calls, one image at a time.

A refiner takes a finished image and returns it upscaled, with its faces
restored, or outpainted into a larger canvas through a mask:

    upscale(image, scale)                      Real-ESRGAN and friends
    restore_faces(image, model, fidelity)      GFPGAN / CodeFormer
    outpaint(image, mask, prompt, seed)        generative fill where the mask is white

It is not a second client: the provider blocks that host such models serve it
(`ReplicateProvider`, `StabilityProvider`), through the same HTTP layer
(blocks/http.py), the same token and the same error mapping. `ReplicateRefiner`
and `StabilityRefiner` are those blocks under the saved block types refiners
have always had, so saved refiner blocks still load.
"""

from __future__ import annotations

from brandforge.blocks.providers.base import ImageRefiner
from brandforge.blocks.providers.replicate import ReplicateRefiner
from brandforge.blocks.providers.stability import StabilityRefiner

__all__ = ["ImageRefiner", "ReplicateRefiner", "StabilityRefiner"]
