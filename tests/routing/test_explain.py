"""`brandforge route --explain`: the matched rule, the others with their reason, recipe, provider and
model, rendered prompt, seed and cost — for a saved profile, read through the Prefect API."""

from __future__ import annotations

import shutil

import pytest

from brandforge.deployments.cli import run_command
from brandforge.deployments.demo import demo_profile
from brandforge.models import CHAIN_STEPS
from brandforge.tasks.postprocess.chain import STEPS
from tests.conftest import DEMO_CATALOG


def test_chain_step_names_match_the_chain():
    """Profiles check rule steps against models.CHAIN_STEPS (blocks cannot import the chain): the same names."""
    assert set(CHAIN_STEPS) == {*STEPS, "encode"}


@pytest.mark.usefixtures("prefect_server")
def test_route_explain_prints_the_decision(tmp_path, capsys):
    catalog = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG, catalog)
    demo_profile(tmp_path / "state", client_id="explain", catalog=catalog).save("explain", overwrite=True)

    assert run_command(["route", "--explain", "astronaut-portrait.png", "--client", "explain",
                        "--now", "2026-12-24T20:00:00+00:00"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "record    manifest: name 'Astronaut Portrait', category 'space'" in out
    assert "  ✗ mugs             no match: path 'astronaut-portrait.png' does not match '*mug*'" in lines
    assert "  ✓ space-portraits  matched" in lines
    assert "  · low-priority     not reached: rule space-portraits matched first" in lines
    assert "recipe    sketch  (style 'pencil sketch'; chain: grade → watermark → encode)" in lines
    assert "provider  studio → local, model brandforge-local-v1-studio" in lines
    assert "template  space@1" in lines
    assert "prompt    pencil sketch of Astronaut Portrait for Demo Co., winter night sky, studio product drawing" in lines
    assert any(line.startswith("seed      ") and "derived from the source's content key" in line for line in lines)
    assert "cost      $0.0000  (1 image(s) × $0)" in lines
    assert "ledger    not done for these bytes and this recipe: a run generates it" in lines

    # By URI as well; a cost-aware rule shows what it weighed.
    assert run_command(["route", "--explain", (catalog / "rocket-launch.jpg").resolve().as_uri(), "--client", "explain",
                        "--now", "2026-12-24T20:00:00+00:00"]) == 0
    out = capsys.readouterr().out
    assert "provider  default → local, model brandforge-local-v1  (cost-aware)" in out and "no provider qualifies: the default" in out

    assert run_command(["route", "--explain", "nothing.png", "--client", "explain"]) == 1
    assert "no asset 'nothing.png' in client explain's catalog" in capsys.readouterr().err
