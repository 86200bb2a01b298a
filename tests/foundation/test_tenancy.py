"""Tenancy of saved blocks: a client's profile and recipes use only its own blocks or shared ones.

Saved blocks belong to the client they are named after (`acme`, `acme-…`); blocks
named `shared-…` may be used by every client. Checked on the real Prefect API
(test harness): a rival's block is refused by name before it is loaded or used,
and no error names any client but the one asking.
"""

from __future__ import annotations

import pytest

from brandforge.blocks.providers.local_engine import LocalEngine
from brandforge.blocks.refiners import ReplicateRefiner
from brandforge.models import InvalidInput, StepSpec
from brandforge.tasks.postprocess.context import load_block
from brandforge.tasks.profiles import check_profile, load_profile

pytestmark = pytest.mark.usefixtures("prefect_server")


def with_refiner_step(profile, ref: str):
    """The profile with a faces step naming the saved refiner `ref` in its first recipe."""
    recipes = list(profile.recipes)
    recipes[0] = recipes[0].model_copy(update={"chain": [StepSpec(step="faces", params={"refiner": ref}), *recipes[0].chain]})
    return profile.model_copy(update={"recipes": recipes})


def test_a_recipe_may_name_only_its_own_or_shared_refiners(demo_profile):
    for name in ("rival-upscaler", "acme-upscaler", "shared-upscaler"):
        ReplicateRefiner(api_key=f"r8_{name}_token").save(name, overwrite=True)
    acme = demo_profile.model_copy(update={"client_id": "acme"})

    with pytest.raises(InvalidInput, match=r"names block 'rival-upscaler', which is not client 'acme''s") as refused:
        check_profile.fn(with_refiner_step(acme, "brandforge-replicate-refiner/rival-upscaler"))
    assert "r8_rival" not in str(refused.value)
    for own in ("acme-upscaler", "shared-upscaler"):
        check_profile.fn(with_refiner_step(acme, f"brandforge-replicate-refiner/{own}"))  # passes
        assert isinstance(load_block(f"brandforge-replicate-refiner/{own}", "acme"), ReplicateRefiner)
    # Refused before any load: a name that does not even exist gets the same answer, so nothing is probed.
    with pytest.raises(InvalidInput, match="not client 'acme''s"):
        load_block("brandforge-replicate-refiner/rival-does-not-exist", "acme")


def test_a_profile_embedding_another_clients_block_does_not_load(demo_profile):
    LocalEngine(job_dir="/tmp/rival-jobs").save("rival-engine", overwrite=True)
    LocalEngine(job_dir="/tmp/shared-jobs").save("shared-engine", overwrite=True)

    demo_profile.model_copy(update={"client_id": "acme", "provider": LocalEngine.load("rival-engine")}).save("acme", overwrite=True)
    with pytest.raises(InvalidInput, match=r"client profile 'acme' names block 'rival-engine', which is not client 'acme''s"):
        load_profile("acme")

    demo_profile.model_copy(update={"client_id": "acme", "provider": LocalEngine.load("shared-engine")}).save("acme", overwrite=True)
    assert load_profile("acme").provider._block_document_name == "shared-engine"


def test_an_unknown_client_error_names_no_other_client(demo_profile):
    demo_profile.model_copy(update={"client_id": "rival"}).save("rival", overwrite=True)
    with pytest.raises(InvalidInput) as unknown:
        load_profile("nobody")
    assert "unknown client 'nobody'" in str(unknown.value) and "rival" not in str(unknown.value)
