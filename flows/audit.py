"""audit_image: the lineage of one published image from the ledger, left as a Prefect artifact.

Run from the UI or `brandforge audit <ref> --artifact`; the artifact
`audit-<generation key>` holds what `brandforge audit` prints.
"""

from __future__ import annotations

from prefect import flow

from brandforge.blocks.ledger import Ledger
from brandforge.models import InvalidInput
from brandforge.tasks.audit import artifact_key, publish_lineage_artifact, render_lineage
from brandforge.tasks.profiles import load_profile

__all__ = ["artifact_key", "audit_image", "render_lineage"]


@flow(name="audit-image", flow_run_name="audit {ref}")
def audit_image(ref: str, client: str | None = None, ledger: Ledger | None = None) -> str:
    """Find `ref` (published URL, generation key, ledger row id or remote id) among `client`'s rows
    and store its lineage. The ledger is `client`'s (its profile's) unless one is given; without a
    client, every client's rows are searched (an operator's audit)."""
    if ledger is None:
        if client is None:
            raise InvalidInput("audit-image needs a client (whose profile names the ledger) or a ledger")
        ledger = load_profile(client).ledger
    rows = ledger.lineage(ref, client=client)
    if not rows:
        raise InvalidInput(f"nothing of client {client!r} in the ledger at {ledger.url} matches {ref!r}; "
                           "give a published URL, a generation key, a ledger row id or a remote id")
    publish_lineage_artifact(rows)
    return render_lineage(rows)
