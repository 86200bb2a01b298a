"""A republished asset (same client, source and target; a new recipe) replaces its earlier entry.

WordPress runs for real (Debian's packages; faults on the wire by the proxy), Strapi as the
v4/v5 fake. Each target: the entry is re-pointed at the new image, the old image is deleted,
and a crash between upload and re-pointing, or after re-pointing, still ends with one entry.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from brandforge.blocks.targets.strapi import StrapiSite
from brandforge.models import PublishError, PublishItem
from tests.publish.conftest import Fault, make_image


def run(coro):
    return asyncio.run(coro)


def republished(item: PublishItem, tmp_path, colour: str = "green") -> PublishItem:
    """The same asset through a changed recipe: the same generation, a new output key, other pixels."""
    image = make_image(tmp_path / "out2" / f"final-{colour}.jpg", colour)
    return item.model_copy(update={"output_key": uuid.uuid4().hex * 2, "image_path": str(image)})


# ---------------------------------------------------------------------------------------------- WordPress


def posts_of_source(wordpress, source_uri: str) -> list[dict]:
    """Every post (any status) carrying this source, newest first: the asset's entries at the site."""
    posts = wordpress.get("/wp/v2/posts", status="any", context="edit", per_page=100, orderby="id", order="desc")
    return [p for p in posts if (p.get("meta") or {}).get("_source_image") == source_uri]


def media_status(wordpress, media_id: int) -> int:
    return httpx.get(f"{wordpress.url}/", params={"rest_route": f"/wp/v2/media/{media_id}", "context": "edit"},
                     auth=(wordpress.user, wordpress.app_password), timeout=20).status_code


def assert_replaced_at_wordpress(wordpress, first, item, new) -> dict:
    [post] = posts_of_source(wordpress, item.source_uri)
    assert post["id"] == first.remote_ids["post_id"]  # the same entry, re-pointed
    assert post["meta"]["_brandforge_generation_key"] == new.publish_key
    media = wordpress.get(f"/wp/v2/media/{post['featured_media']}", context="edit")
    assert httpx.get(media["source_url"], timeout=10).content == open(new.image_path, "rb").read()
    assert f"wp-image-{media['id']}" in post["content"]["raw"] and media["source_url"] in post["content"]["raw"]
    assert media_status(wordpress, first.remote_ids["media_id"]) == 404  # the old image left the media library
    assert wordpress.count("posts", item.publish_key) == 0 and wordpress.count("media", item.publish_key) == 0
    assert wordpress.count("posts", new.publish_key) == 1 and wordpress.count("media", new.publish_key) == 1
    return post


def test_wordpress_republish_repoints_the_entry_and_deletes_the_old_image(wordpress, publish_item, tmp_path):
    site = wordpress.site(status="publish")
    first = run(site.publish(publish_item))
    new = republished(publish_item, tmp_path)

    receipt = run(site.publish(new, replaces=first.remote_ids))

    assert not receipt.already_existed and receipt.remote_ids["post_id"] == first.remote_ids["post_id"]
    assert receipt.remote_ids["replaced_media_id"] == first.remote_ids["media_id"]
    post = assert_replaced_at_wordpress(wordpress, first, publish_item, new)
    assert post["status"] == "publish" and post["title"]["raw"] == "Red mug"  # what a person sees stays
    # A rerun of the new recipe finds it done.
    assert run(site.publish(new, replaces=first.remote_ids)).already_existed
    assert len(posts_of_source(wordpress, publish_item.source_uri)) == 1


def test_wordpress_crash_between_upload_and_repointing_leaves_one_entry(wordpress, wp_proxy, publish_item, tmp_path):
    first = run(wordpress.site().publish(publish_item))
    new = republished(publish_item, tmp_path)
    # The new image is uploaded; the update of the entry dies before WordPress sees it.
    wp_proxy.faults.append(Fault("POST", f"/wp/v2/posts/{first.remote_ids['post_id']}", 502))
    with pytest.raises(PublishError):
        run(wordpress.site(url=wp_proxy.url).publish(new, replaces=first.remote_ids))
    assert wordpress.count("media", new.publish_key) == 1 and len(posts_of_source(wordpress, publish_item.source_uri)) == 1

    receipt = run(wordpress.site().publish(new, replaces=first.remote_ids))

    assert receipt.remote_ids["media_reused"]
    assert_replaced_at_wordpress(wordpress, first, publish_item, new)


def test_wordpress_crash_after_repointing_only_removes_the_old_image(wordpress, wp_proxy, publish_item, tmp_path):
    first = run(wordpress.site().publish(publish_item))
    new = republished(publish_item, tmp_path)
    # The entry is re-pointed (its answer lost), then the run dies: the old image is still there.
    wp_proxy.faults.append(Fault("POST", f"/wp/v2/posts/{first.remote_ids['post_id']}", 502, forward=True))
    with pytest.raises(PublishError):
        run(wordpress.site(url=wp_proxy.url).publish(new, replaces=first.remote_ids))
    assert media_status(wordpress, first.remote_ids["media_id"]) == 200

    receipt = run(wordpress.site().publish(new, replaces=first.remote_ids))

    assert receipt.already_existed
    assert_replaced_at_wordpress(wordpress, first, publish_item, new)


def test_wordpress_entry_deleted_by_a_person_is_published_anew(wordpress, publish_item, tmp_path):
    first = run(wordpress.site().publish(publish_item))
    httpx.delete(f"{wordpress.url}/", params={"rest_route": f"/wp/v2/posts/{first.remote_ids['post_id']}", "force": "true"},
                 auth=(wordpress.user, wordpress.app_password), timeout=20).raise_for_status()
    new = republished(publish_item, tmp_path)

    receipt = run(wordpress.site().publish(new, replaces=first.remote_ids))

    assert receipt.remote_ids["post_id"] != first.remote_ids["post_id"]
    assert [p["id"] for p in posts_of_source(wordpress, publish_item.source_uri)] == [receipt.remote_ids["post_id"]]


# ---------------------------------------------------------------------------------------------- Strapi


def strapi_site(fake) -> StrapiSite:
    return StrapiSite(url=fake.url, api_token=fake.token, version=fake.version, timeout_seconds=10)


def assert_replaced_at_strapi(fake, first, new) -> None:
    [entry] = fake.entries  # one entry for the asset: the first one, re-pointed
    assert entry["id"] == first.remote_ids["entry_id"] and entry["generation_key"] == new.publish_key
    [file] = fake.files  # the old upload is deleted
    assert entry["cover"] == file["id"] != first.remote_ids["file_id"] and new.publish_key[:16] in file["name"]
    assert entry["title"] == "Red mug"
    ref = entry["documentId"] if fake.version == "v5" else entry["id"]
    assert ("PUT", f"/api/articles/{ref}") in fake.requests  # v4 by numeric id, v5 by documentId


@pytest.mark.parametrize("strapi_fake", ["v4", "v5"], indirect=True)
def test_strapi_republish_repoints_the_entry_and_deletes_the_old_file(strapi_fake, publish_item, tmp_path):
    first = run(strapi_site(strapi_fake).publish(publish_item))
    new = republished(publish_item, tmp_path)

    receipt = run(strapi_site(strapi_fake).publish(new, replaces=first.remote_ids))

    assert not receipt.already_existed and receipt.remote_ids["replaced_file_id"] == first.remote_ids["file_id"]
    assert receipt.remote_ids["entry_id"] == first.remote_ids["entry_id"]
    assert receipt.remote_ids["document_id"] == first.remote_ids["document_id"]
    assert_replaced_at_strapi(strapi_fake, first, new)
    assert run(strapi_site(strapi_fake).publish(new, replaces=first.remote_ids)).already_existed
    assert len(strapi_fake.entries) == 1 and len(strapi_fake.files) == 1


@pytest.mark.parametrize("strapi_fake", ["v4", "v5"], indirect=True)
@pytest.mark.parametrize("crash", ["update-request-lost", "file-delete-lost"])
def test_strapi_crash_midway_leaves_one_entry(strapi_fake, publish_item, tmp_path, crash):
    first = run(strapi_site(strapi_fake).publish(publish_item))
    new = republished(publish_item, tmp_path)
    route = {"update-request-lost": "update", "file-delete-lost": "delete-file"}[crash]
    strapi_fake.faults[route].append(502)
    with pytest.raises(PublishError):
        run(strapi_site(strapi_fake).publish(new, replaces=first.remote_ids))
    assert len(strapi_fake.entries) == 1 and len(strapi_fake.files) == 2  # the new upload is there, nothing else

    receipt = run(strapi_site(strapi_fake).publish(new, replaces=first.remote_ids))

    assert receipt.already_existed == (crash == "file-delete-lost")
    assert_replaced_at_strapi(strapi_fake, first, new)


@pytest.mark.parametrize("strapi_fake", ["v5"], indirect=True)
def test_strapi_entry_deleted_by_a_person_is_published_anew(strapi_fake, publish_item, tmp_path):
    first = run(strapi_site(strapi_fake).publish(publish_item))
    strapi_fake.entries.clear()
    receipt = run(strapi_site(strapi_fake).publish(republished(publish_item, tmp_path), replaces=first.remote_ids))
    [entry] = strapi_fake.entries
    assert receipt.remote_ids["entry_id"] == entry["id"] != first.remote_ids["entry_id"]


# ---------------------------------------------------------------------------------------------- S3


def test_s3_republish_at_another_key_deletes_the_earlier_object(s3_bucket_block, publish_item, tmp_path):
    """The default layout keys objects by generation: a new generation lands beside the old object, which goes."""
    from brandforge.blocks.targets.s3 import S3Target

    target = S3Target(bucket=s3_bucket_block)
    first = run(target.publish(publish_item))
    new = republished(publish_item, tmp_path).model_copy(update={"generation_key": uuid.uuid4().hex * 2})
    client = s3_bucket_block.credentials.get_s3_client()

    receipt = run(target.publish(new, replaces=first.remote_ids))
    listed = client.list_objects_v2(Bucket=s3_bucket_block.bucket_name)
    assert [o["Key"] for o in listed["Contents"]] == [receipt.remote_ids["key"]] != [first.remote_ids["key"]]
    # A rerun (a crash before the ledger row) finds the new object and has nothing left to delete.
    assert run(target.publish(new, replaces=first.remote_ids)).already_existed
    assert client.list_objects_v2(Bucket=s3_bucket_block.bucket_name)["KeyCount"] == 1
