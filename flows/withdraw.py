"""withdraw: take down what brandforge published for sources that were unpublished or deleted.

The webhook gateway runs it (and waits for it) when a Strapi entry of a configured
collection is unpublished or deleted, so the run is visible in Prefect and the gateway's
answer says what was withdrawn. For each of the client's ledger rows still `published`
for those sources, the profile's target takes the image down (Strapi: the entry is
unpublished, or deleted; see `StrapiSite.withdraw`) and the row is marked `withdrawn`.
A second delivery finds nothing published and withdraws nothing: not an error.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from brandforge.blocks.client_profile import ClientProfile
from brandforge.models import InvalidInput, Withdrawal
from brandforge.tasks.profiles import load_profile
from brandforge.tasks.publish import withdraw_published_row


@flow(name="withdraw", flow_run_name="{client}: {reason}")
def withdraw_published(client: str, source_uris: list[str], reason: str, delete: bool = False,
                       profile: ClientProfile | None = None) -> list[Withdrawal]:
    """Withdraw every image of `client` still published for `source_uris` (unpublish, or `delete`)."""
    profile = profile or load_profile(client)
    if profile.client_id != client:
        raise InvalidInput(f"withdrawal for client {client!r} cannot run with the profile of another client")
    rows = profile.ledger.published_rows_for_sources(client, source_uris)
    # One at a time (a CMS rate-limits deletes); async tasks run on Prefect's loop.
    # Each row at the target it was published to: the profile's own, or a named one a routing rule chose.
    by_key = {t.target_key: t for t in (*profile.targets.values(), profile.target)}
    done = [withdraw_published_row.submit(row_id, row, by_key.get(row.target_key, profile.target), profile.ledger,
                                          reason, delete).result()
            for row_id, row in rows]
    taken = [w for w in done if w.withdrawn]
    message = (f"{client}: withdrew {len(taken)} of {len(rows)} published image(s) ({reason})" if rows
               else f"{client}: nothing published for these sources ({reason})")
    get_run_logger().info(message)
    return Completed(message=message, data=done)  # type: ignore[return-value]


def run_withdrawal(profile: ClientProfile, source_uris: list[str], reason: str, delete: bool) -> list[Withdrawal]:
    """The withdraw flow run for one client (what the gateway calls, off its event loop)."""
    state: State = withdraw_published(profile.client_id, source_uris, reason, delete, profile=profile, return_state=True)
    return state.result()
