"""The ledger half of exactly-once: which recorded publishes count for the target at hand."""

from __future__ import annotations

from brandforge.blocks.ledger import Ledger
from brandforge.blocks.targets.gallery import LocalGallery
from brandforge.blocks.targets.wordpress import WordPressSite
from brandforge.models import LedgerEntry
from brandforge.tasks.publish import receipt_from_ledger


SITE = WordPressSite(url="http://127.0.0.1:8089", username="a", application_password="p")


def _ledger(tmp_path, publish_item) -> Ledger:
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.record(LedgerEntry(
        client="demo", source_uri=publish_item.source_uri, generation_key=publish_item.generation_key, state="published",
        target="wordpress", target_key=SITE.target_key, published_url="http://127.0.0.1:8089/?p=5",
        remote_ids={"site": "http://127.0.0.1:8089", "post_id": 5},
    ))
    return ledger


def test_same_site_is_served_from_the_ledger(tmp_path, publish_item):
    site = WordPressSite(url="http://127.0.0.1:8089/", username="other-user", application_password="other")  # the same site
    receipt = receipt_from_ledger(publish_item, site, _ledger(tmp_path, publish_item))
    assert receipt.already_existed and receipt.url == "http://127.0.0.1:8089/?p=5" and receipt.remote_ids["post_id"] == 5


def test_another_site_or_kind_of_target_is_still_published(tmp_path, publish_item):
    ledger = _ledger(tmp_path, publish_item)
    other = WordPressSite(url="http://127.0.0.1:9000", username="a", application_password="p")
    assert receipt_from_ledger(publish_item, other, ledger) is None
    assert receipt_from_ledger(publish_item, LocalGallery(folder=str(tmp_path / "g")), ledger) is None
    unknown = publish_item.model_copy(update={"generation_key": "0" * 64})
    assert receipt_from_ledger(unknown, other, ledger) is None
    another_client = publish_item.model_copy(update={"client": "rival"})  # same bytes, same recipe, same site
    assert receipt_from_ledger(another_client, SITE, ledger) is None
