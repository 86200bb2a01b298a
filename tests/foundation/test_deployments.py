"""Deployments: prefect.yaml is valid, blocks register, and the on-new-asset trigger fires."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.events import DeploymentEventTrigger

from tests.conftest import ROOT


def test_prefect_yaml_entrypoints_and_triggers_are_valid():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    from prefect.flows import load_flow_from_entrypoint

    names = set()
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
        names.add((flow.name, dep["name"]))
        for trig in dep.get("triggers", []):
            parsed = DeploymentEventTrigger(**{k: v for k, v in trig.items() if k != "type"})
            # Trigger models ignore unknown keys: make sure nothing we wrote was dropped.
            assert set(trig) - {"type"} <= set(parsed.model_fields_set)
            assert parsed.expect == {"brandforge.asset.created"}
        if dep["name"] == "on-new-asset":
            assert dep["parameters"] == {"fail_run_on_failure": True}
    assert names == {("catalog-refresh", "nightly-demo"), ("process-asset", "on-new-asset")}


@pytest.mark.usefixtures("prefect_server")
def test_blocks_register_from_the_module():
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "brandforge.blocks"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for name in ("Brandforge Client Profile", "Brandforge Local Engine", "Brandforge Local Gallery", "Brandforge Ledger"):
        assert name in text


@pytest.mark.usefixtures("prefect_server")
def test_new_asset_event_starts_process_asset():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import emit_event

    from brandforge.deployments.serve import build_deployments
    from brandforge.models import AssetRef

    on_new_asset = next(d for d in build_deployments() if d.name == "on-new-asset")
    deployment_id = on_new_asset.apply()
    time.sleep(2)  # the server loads automations on a short cycle
    emit_event(
        event="brandforge.asset.created",
        resource={"prefect.resource.id": "brandforge.asset.demo.abc123", "brandforge.client": "demo"},
        payload={"uri": "file:///catalog/mug.png", "name": "mug.png"},
    )
    # A CMS asset's entry travels as its record (the gateway's asset_event puts it in the payload).
    cms_record = {"collection": "product", "id": 7, "title": "Red mug", "category": "kitchen", "tags": ["mugs"]}
    emit_event(
        event="brandforge.asset.created",
        resource={"prefect.resource.id": "brandforge.asset.demo.def456", "brandforge.client": "demo"},
        payload={"uri": "file:///catalog/red.png", "name": "red.png", "record": cms_record},
    )
    runs = []
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and len(runs) < 2:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
            time.sleep(1)
    assert len(runs) == 2, "the trigger did not create a flow run per event"
    assets = {r.parameters["asset"]["name"]: r.parameters["asset"] for r in runs}
    assert assets["mug.png"] == {"client": "demo", "uri": "file:///catalog/mug.png", "name": "mug.png", "record": {}}
    assert assets["red.png"]["record"] == cms_record
    assert AssetRef.model_validate(assets["red.png"]).record.model_dump(include={"name", "category", "tags"}) == {
        "name": "Red mug", "category": "kitchen", "tags": ["mugs"]}
    assert all(r.parameters["fail_run_on_failure"] is True for r in runs)  # a failed asset is a Failed run (flows/run_state.py)


def test_the_pull_step_finds_the_checkout_or_names_the_variable(tmp_path, monkeypatch):
    """prefect.yaml's pull step, run as a worker runs it: no variable needed; a wrong one is named."""
    import asyncio

    from prefect.deployments.steps.core import run_steps

    steps = yaml.safe_load((ROOT / "prefect.yaml").read_text())["pull"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRANDFORGE_HOME", raising=False)
    out = asyncio.run(run_steps(steps, print_function=lambda *a, **k: None))
    assert Path.cwd() == ROOT and out["directory"] == str(ROOT)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRANDFORGE_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match="deployments.steps.enter_project") as failed:
        asyncio.run(run_steps(steps, print_function=lambda *a, **k: None))
    assert "BRANDFORGE_HOME" in str(failed.value.__cause__)  # the worker logs it with the step's error
