"""StrapiSite against a fake Strapi that follows Strapi's documented v4/v5 REST shapes over HTTP.

(Strapi itself needs a Node build; see tests/fakes/strapi.py and the README.)
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from brandforge.blocks.targets.strapi import StrapiSite, strapi_file_name
from brandforge.models import PublishError

pytestmark = pytest.mark.parametrize("strapi_fake", ["v4", "v5"], indirect=True)


def run(coro):
    return asyncio.run(coro)


def site(fake, **overrides) -> StrapiSite:
    return StrapiSite(**{"url": fake.url, "api_token": fake.token, "version": fake.version, "timeout_seconds": 10, **overrides})


def test_publish_uploads_then_links_the_file_to_the_entry(strapi_fake, publish_item):
    receipt = run(site(strapi_fake).publish(publish_item))

    assert [f["name"] for f in strapi_fake.files] == [strapi_file_name(publish_item)]
    file = strapi_fake.files[0]
    assert file["alternativeText"] == publish_item.alt_text and file["mime"] == "image/jpeg"
    [entry] = strapi_fake.entries
    assert entry["cover"] == file["id"] and entry["generation_key"] == publish_item.generation_key and entry["title"] == "Red mug"
    assert receipt.url == f"{strapi_fake.url}{file['url']}"
    assert receipt.remote_ids["entry_id"] == entry["id"] and receipt.remote_ids["file_id"] == file["id"]
    if strapi_fake.version == "v5":
        assert receipt.remote_ids["document_id"] == entry["documentId"]
    # Read back through the REST API, the way a site would.
    body = httpx.get(f"{strapi_fake.url}/api/articles", params={"filters[generation_key][$eq]": publish_item.generation_key, "populate": "cover"},
                     headers={"Authorization": f"Bearer {strapi_fake.token}"}).json()
    assert len(body["data"]) == 1


def test_rerun_creates_nothing(strapi_fake, publish_item):
    first = run(site(strapi_fake).publish(publish_item))
    again = run(site(strapi_fake).publish(publish_item))
    found = run(site(strapi_fake).find_existing(publish_item))
    assert again.already_existed and found.already_existed
    assert again.url == first.url == found.url
    assert len(strapi_fake.files) == 1 and len(strapi_fake.entries) == 1


@pytest.mark.parametrize("crash", ["entry-request-lost", "upload-answer-lost", "entry-answer-lost"])
def test_crash_midway_finishes_without_duplicates(strapi_fake, publish_item, crash):
    route, fault = {"entry-request-lost": ("create", 502), "upload-answer-lost": ("upload", "store-then-500"),
                    "entry-answer-lost": ("create", "store-then-500")}[crash]
    strapi_fake.faults[route].append(fault)
    with pytest.raises(PublishError) as crashed:
        run(site(strapi_fake).publish(publish_item))
    assert crashed.value.retryable

    receipt = run(site(strapi_fake).publish(publish_item))

    assert len(strapi_fake.files) == 1 and len(strapi_fake.entries) == 1
    assert strapi_fake.entries[0]["cover"] == strapi_fake.files[0]["id"]
    assert receipt.already_existed is (crash == "entry-answer-lost")


@pytest.mark.parametrize(
    ("overrides", "status", "words"),
    [
        ({"api_token": "wrong"}, 401, "credentials were not accepted"),
        ({"api_token": "read-only-token"}, 403, "lack the permission"),
        ({"collection": "posters"}, 404, "collection 'posters' has no REST route"),
        ({"key_field": "brandforge_key"}, 400, "text field named 'brandforge_key'"),
    ],
    ids=["401", "403", "404", "missing-key-field"],
)
def test_refusals_are_clear_and_not_retryable(strapi_fake, publish_item, overrides, status, words):
    with pytest.raises(PublishError) as refused:
        run(site(strapi_fake, **overrides).publish(publish_item))
    assert refused.value.status_code == status and not refused.value.retryable
    assert words in refused.value.reason
    assert "strapi-token" not in refused.value.reason
    assert strapi_fake.entries == []


def test_too_large_and_refused_files(strapi_fake, publish_item, tmp_path):
    strapi_fake.max_upload_bytes = 100
    with pytest.raises(PublishError) as too_big:
        run(site(strapi_fake).publish(publish_item))
    assert too_big.value.status_code == 413 and not too_big.value.retryable and "larger than the server accepts" in too_big.value.reason
    strapi_fake.max_upload_bytes = 10**7
    with pytest.raises(PublishError) as refused:
        run(site(strapi_fake).publish(publish_item.model_copy(update={"content_type": "image/tiff"})))
    assert refused.value.status_code == 400 and "image/tiff is not allowed" in refused.value.reason
    assert strapi_fake.files == [] and strapi_fake.entries == []


def test_server_errors_are_retryable(strapi_fake, publish_item):
    strapi_fake.faults["find"].append(503)
    with pytest.raises(PublishError) as failed:
        run(site(strapi_fake).publish(publish_item))
    assert failed.value.retryable and failed.value.status_code == 503
    assert run(site(strapi_fake).publish(publish_item)).url


def test_concurrent_duplicate_publishes_leave_one_entry(strapi_fake, publish_item):
    async def both():
        return await asyncio.gather(site(strapi_fake).publish(publish_item), site(strapi_fake).publish(publish_item))

    first, second = run(both())

    assert len(strapi_fake.entries) == 1
    assert first.remote_ids["entry_id"] == second.remote_ids["entry_id"] == strapi_fake.entries[0]["id"]


def test_withdraw_unpublishes_on_v4_deletes_on_v5_and_is_idempotent(strapi_fake, publish_item):
    """Strapi 5's REST API cannot unpublish, so a v5 withdrawal deletes; v4 turns the entry back into a draft."""
    receipt = run(site(strapi_fake).publish(publish_item))
    said = run(site(strapi_fake).withdraw(receipt.remote_ids, delete=False))
    listed = httpx.get(f"{strapi_fake.url}/api/articles", headers={"Authorization": f"Bearer {strapi_fake.token}"}).json()
    assert listed["data"] == []  # no longer live
    if strapi_fake.version == "v4":
        assert "unpublished (draft)" in said and strapi_fake.entries[0]["publishedAt"] is None
        assert ("PUT", f"/api/articles/{receipt.remote_ids['entry_id']}") in strapi_fake.requests
        said = run(site(strapi_fake).withdraw(receipt.remote_ids, delete=True))
        assert said == f"entry {receipt.remote_ids['entry_id']} deleted"
    else:
        assert "deleted (Strapi 5's REST API cannot unpublish)" in said
        assert ("DELETE", f"/api/articles/{receipt.remote_ids['document_id']}") in strapi_fake.requests
    assert strapi_fake.entries == []
    assert run(site(strapi_fake).withdraw(receipt.remote_ids, delete=True)).endswith("already gone")


def test_withdraw_refusals_are_clear(strapi_fake, publish_item):
    receipt = run(site(strapi_fake).publish(publish_item))
    with pytest.raises(PublishError, match="lack the permission") as refused:
        run(site(strapi_fake, api_token="read-only-token").withdraw(receipt.remote_ids, delete=True))
    assert not refused.value.retryable and len(strapi_fake.entries) == 1
    with pytest.raises(PublishError, match="names no Strapi"):
        run(site(strapi_fake).withdraw({"entry_id": "../../admin"}, delete=True))
