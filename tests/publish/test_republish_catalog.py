"""Through `catalog_refresh`: a changed watermark republishes every asset from the generation store
(0 provider calls) and each asset's WordPress entry is replaced, not duplicated; the ledger marks the
earlier rows `replaced` with a pointer to the new ones, and `brandforge audit` shows the chain.

(Strapi's replace is the same task path; tests/publish/test_republish.py covers its v4/v5 wire.)"""

from __future__ import annotations

import httpx
import pytest

from brandforge.blocks.ledger import Ledger
from brandforge.deployments.cli import main
from tests.fakes import replicate as fake_replicate
from tests.fakes.base import Knobs, serve
from tests.foundation.test_generation_store import replicate_block, with_chain_param
from tests.foundation.test_ledger_catalog import crops, refresh
from tests.publish.test_republish import media_status, posts_of_source

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_changed_watermark_replaces_each_entry_without_a_provider_call(wordpress, demo_profile, demo_state, tmp_path, capsys):
    n = 2
    fake = fake_replicate.FakeReplicate(Knobs(latency_s=0.05))
    catalog = crops(tmp_path / "catalog", n)
    with serve(fake):
        profile = demo_profile.model_copy(update={"provider": replicate_block(fake, tmp_path), "target": wordpress.site()})
        first = refresh(profile, catalog, demo_state)
        assert first.counts == {"published": n}, [o.label for o in first.outcomes]
        submits = fake.stats["submits"]

        second = refresh(with_chain_param(profile, "watermark", anchor="top-left"), catalog, demo_state)

        assert second.counts == {"published": n}, [o.label for o in second.outcomes]
        assert fake.stats["submits"] == submits and second.cost_usd == 0  # the generations came from the store

    ledger = Ledger(url=profile.ledger.url)
    rows = dict(ledger.rows(client="demo"))
    before = {o.source_uri: o for o in first.outcomes}
    for outcome in second.outcomes:
        earlier = before[outcome.source_uri]
        new_id, new_row = next((i, r) for i, r in rows.items() if r.output_key == outcome.output_key)
        old_id, old_row = next((i, r) for i, r in rows.items() if r.output_key == earlier.output_key)
        assert outcome.output_key != earlier.output_key
        assert (old_row.state, old_row.replaced_by, new_row.state) == ("replaced", new_id, "published")
        # One entry for the asset, the same one as before, showing the new image; the old image is gone.
        [post] = posts_of_source(wordpress, outcome.source_uri)
        assert post["id"] == old_row.remote_ids["post_id"] == new_row.remote_ids["post_id"]
        media = wordpress.get(f"/wp/v2/media/{post['featured_media']}", context="edit")
        shown = httpx.get(media["source_url"], timeout=10).content
        assert shown in {open(p, "rb").read() for p in outcome.output_uris}
        assert shown not in {open(p, "rb").read() for p in earlier.output_uris}
        assert media_status(wordpress, old_row.remote_ids["media_id"]) == 404

    # The audit of an old row shows the chain to the current publish.
    old_id = next(i for i, r in rows.items() if r.state == "replaced")
    new_id = rows[old_id].replaced_by
    assert main(["audit", str(old_id), "--client", "demo", "--ledger", ledger.url]) == 0
    out = capsys.readouterr().out
    assert f"#{old_id}" in out and f"→ replaced by #{new_id}" in out and "(current)" in out
    assert f"(ledger row {new_id}," in out
