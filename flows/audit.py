"""audit_image: the lineage of one published image from the ledger, left as a Prefect artifact.

Run from the UI or `brandforge audit <ref> --artifact`; the artifact
`audit-<generation key>` holds what `brandforge audit` prints.
"""

from __future__ import annotations

from prefect import flow

from blocks.ledger import Ledger
from models import InvalidInput
from tasks.audit import artifact_key, publish_lineage_artifact, render_lineage

__all__ = ["artifact_key", "audit_image", "render_lineage"]


@flow(name="audit-image", flow_run_name="audit {ref}")
def audit_image(ref: str, ledger_url: str | None = None) -> str:
    """Find `ref` (published URL, generation key, ledger row id or remote id) and store its lineage."""
    ledger = Ledger(url=ledger_url) if ledger_url else Ledger()
    rows = ledger.lineage(ref)
    if not rows:
        raise InvalidInput(f"nothing in the ledger at {ledger.url} matches {ref!r}; give a published URL, a generation key, a ledger row id or a remote id")
    publish_lineage_artifact(rows)
    return render_lineage(rows)
