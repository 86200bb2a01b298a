"""Every brandforge deployment, its schedule and its triggers, served from one process.

    python -m deployments.serve            # or: prefect deploy --all (prefect.yaml, work pool)

- `catalog-refresh/nightly`: each client's whole catalog at 02:00 (client set
  by `BRANDFORGE_NIGHTLY_CLIENTS`, comma-separated; default `demo`).
- `process-asset/on-new-asset`: one asset, whenever the webhook gateway (S3
  notification, CMS hook) emits `brandforge.asset.created`.
"""

from __future__ import annotations

import os

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from flows.catalog_refresh import catalog_refresh
from flows.process_asset import process_asset

NIGHTLY_CRON = "0 2 * * *"


def on_new_asset_trigger() -> DeploymentEventTrigger:
    """Run process_asset for each `brandforge.asset.created` event, with the asset from its payload."""
    return DeploymentEventTrigger(
        name="on-new-asset",
        expect={"brandforge.asset.created"},
        match={"prefect.resource.id": "brandforge.asset.*"},
        parameters={
            "asset": {
                "client": "{{ event.resource['brandforge.client'] }}",
                "uri": "{{ event.payload.uri }}",
                "name": "{{ event.payload.name }}",
            }
        },
    )


def build_deployments() -> list[RunnerDeployment]:
    clients = [c.strip() for c in os.environ.get("BRANDFORGE_NIGHTLY_CLIENTS", "demo").split(",") if c.strip()]
    nightly = [
        catalog_refresh.to_deployment(
            name=f"nightly-{client}", cron=NIGHTLY_CRON, parameters={"client": client},
            description=f"Nightly catalog refresh for {client}.", tags=["brandforge", client],
        )
        for client in clients
    ]
    on_new_asset = process_asset.to_deployment(
        name="on-new-asset", triggers=[on_new_asset_trigger()],
        description="One new asset, from a brandforge.asset.created event.", tags=["brandforge"],
    )
    return [*nightly, on_new_asset]


if __name__ == "__main__":
    serve(*build_deployments())
