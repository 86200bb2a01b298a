"""WordPressSite against a real WordPress (Debian's packages) on 127.0.0.1.

Every test publishes for real and reads back through the REST API; faults are
injected on the wire by a proxy in front of the real site, never by patching
our code.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from brandforge.models import PublishError
from tests.publish.conftest import Fault


def run(coro):
    return asyncio.run(coro)


def test_wordpress_bring_up_figures(wordpress):
    # Not an assertion on speed: the figure goes to the report (-ra / -s).
    print(f"WordPress up in {wordpress.seconds_to_start:.1f} s at {wordpress.url}")
    assert wordpress.get("/brandforge/v1/status")["plugin"] == "brandforge-meta"


def test_publish_creates_media_and_post_and_reads_back(wordpress, publish_item):
    site = wordpress.site()
    assert run(site.find_existing(publish_item)) is None

    receipt = run(site.publish(publish_item))

    assert not receipt.already_existed and receipt.target == "wordpress"
    post = wordpress.get(f"/wp/v2/posts/{receipt.remote_ids['post_id']}", context="edit")
    assert post["status"] == "draft"  # the default: a person publishes it in WordPress
    assert post["title"]["raw"] == "Red mug"
    assert post["featured_media"] == receipt.remote_ids["media_id"]
    media = wordpress.get(f"/wp/v2/media/{receipt.remote_ids['media_id']}", context="edit")
    assert media["caption"]["raw"] == post["title"]["raw"] and media["alt_text"] == publish_item.alt_text[:500]
    assert post["meta"]["_brandforge_generation_key"] == publish_item.generation_key
    assert post["meta"]["_source_image"] == publish_item.source_uri
    assert post["link"] == receipt.url
    media = wordpress.get(f"/wp/v2/media/{receipt.remote_ids['media_id']}", context="edit")
    assert media["mime_type"] == "image/jpeg" and media["alt_text"] == publish_item.alt_text
    assert httpx.get(media["source_url"], timeout=10).content == open(publish_item.image_path, "rb").read()


def test_rerun_finds_the_post_and_creates_nothing(wordpress, publish_item):
    site = wordpress.site()
    first = run(site.publish(publish_item))
    again = run(site.publish(publish_item))
    found = run(site.find_existing(publish_item))

    assert again.already_existed and found.already_existed
    assert again.remote_ids["post_id"] == found.remote_ids["post_id"] == first.remote_ids["post_id"]
    assert again.remote_ids["media_url"] == first.remote_ids["media_url"]
    assert wordpress.count("posts", publish_item.generation_key) == 1
    assert wordpress.count("media", publish_item.generation_key) == 1


def test_crash_between_upload_and_post_finishes_with_the_same_media(wordpress, wp_proxy, publish_item):
    # The media upload goes through; the post request dies before WordPress sees it.
    wp_proxy.faults.append(Fault("POST", "/wp/v2/posts", 502))
    with pytest.raises(PublishError) as crashed:
        run(wordpress.site(url=wp_proxy.url).publish(publish_item))
    assert crashed.value.retryable
    assert wordpress.count("media", publish_item.generation_key) == 1
    assert wordpress.count("posts", publish_item.generation_key) == 0

    receipt = run(wordpress.site().publish(publish_item))

    assert receipt.remote_ids["media_reused"] and not receipt.already_existed
    assert wordpress.count("media", publish_item.generation_key) == 1
    assert wordpress.count("posts", publish_item.generation_key) == 1
    post = wordpress.get(f"/wp/v2/posts/{receipt.remote_ids['post_id']}", context="edit")
    assert post["featured_media"] == receipt.remote_ids["media_id"]


def test_crash_after_post_before_answer_is_not_posted_twice(wordpress, wp_proxy, publish_item):
    # WordPress creates the post, but the answer is lost (the worker died, the network dropped).
    wp_proxy.faults.append(Fault("POST", "/wp/v2/posts", 502, forward=True))
    with pytest.raises(PublishError):
        run(wordpress.site(url=wp_proxy.url).publish(publish_item))
    assert wordpress.count("posts", publish_item.generation_key) == 1

    receipt = run(wordpress.site().publish(publish_item))

    assert receipt.already_existed
    assert wordpress.count("posts", publish_item.generation_key) == 1
    assert wordpress.count("media", publish_item.generation_key) == 1


def test_pages_and_drafts(wordpress, publish_item):
    receipt = run(wordpress.site(post_type="pages", status="draft").publish(publish_item))
    page = wordpress.get(f"/wp/v2/pages/{receipt.remote_ids['post_id']}", context="edit")
    assert page["status"] == "draft" and page["featured_media"] == receipt.remote_ids["media_id"]
    # A draft is still found: the key lookup covers every status.
    assert run(wordpress.site(post_type="pages").publish(publish_item)).already_existed
    assert wordpress.count("pages", publish_item.generation_key) == 1


@pytest.mark.parametrize(
    ("overrides", "status", "words"),
    [
        ({"application_password": "wrong wrong wrong wrong"}, 401, "did not accept the application password"),
        ({"username": "viewer"}, 403, "may not upload files and edit posts"),
        ({"post_type": "product"}, 404, "post_type 'product' has no REST route"),
    ],
    ids=["wrong-credentials", "subscriber-403", "unknown-post-type"],
)
def test_refusals_are_clear_and_not_retryable(wordpress, publish_item, overrides, status, words):
    if overrides.get("username") == "viewer":
        overrides["application_password"] = wordpress.viewer_password
    with pytest.raises(PublishError) as refused:
        run(wordpress.site(**overrides).publish(publish_item))
    assert refused.value.status_code == status and not refused.value.retryable
    assert words in refused.value.reason
    assert "wrong wrong" not in refused.value.reason and wordpress.app_password not in refused.value.reason
    assert wordpress.count("media", publish_item.generation_key) == 0
    assert wordpress.count("posts", publish_item.generation_key) == 0


def test_a_file_wordpress_refuses_is_not_retried(wordpress, publish_item, tmp_path):
    fake = tmp_path / "not-an-image.jpg"
    fake.write_text("this is text, not a JPEG")
    item = publish_item.model_copy(update={"image_path": str(fake)})
    with pytest.raises(PublishError) as refused:
        run(wordpress.site().publish(item))
    assert not refused.value.retryable
    assert "refuses this file" in refused.value.reason and "not allowed to upload this file type" in refused.value.reason
    assert wordpress.count("posts", item.generation_key) == 0


@pytest.mark.parametrize(("status", "retryable"), [(413, False), (503, True), (429, True), (400, False)])
def test_http_answers_map_to_retryable_or_not(wordpress, wp_proxy, publish_item, status, retryable):
    wp_proxy.faults.append(Fault("POST", "/wp/v2/media", status))
    with pytest.raises(PublishError) as failed:
        run(wordpress.site(url=wp_proxy.url).publish(publish_item))
    assert failed.value.status_code == status and failed.value.retryable is retryable
    assert f"answered {status} to the media upload" in failed.value.reason
    assert wordpress.count("posts", publish_item.generation_key) == 0


def test_unreachable_site_is_retryable(publish_item):
    from brandforge.blocks.targets.wordpress import WordPressSite
    from tests.conftest import free_port

    site = WordPressSite(url=f"http://127.0.0.1:{free_port()}", username="admin", application_password="x", timeout_seconds=2)
    with pytest.raises(PublishError) as failed:
        run(site.publish(publish_item))
    assert failed.value.retryable and "could not be reached" in failed.value.reason


def test_site_without_the_plugin_is_refused_before_anything_is_created(wordpress, wp_proxy, publish_item):
    wp_proxy.faults.append(Fault("GET", "/brandforge/v1/status", 404))
    with pytest.raises(PublishError) as refused:
        run(wordpress.site(url=wp_proxy.url).publish(publish_item))
    assert "brandforge-meta.php" in refused.value.reason and not refused.value.retryable
    assert [s for s in wp_proxy.seen if s[0] == "POST"] == []


def test_concurrent_duplicate_publishes_leave_one_post(wordpress, publish_item):
    # A webhook delivered twice at once: both runs look, find nothing and create; one must remove its copy.
    async def both():
        return await asyncio.gather(wordpress.site().publish(publish_item), wordpress.site().publish(publish_item))

    first, second = run(both())

    assert first.remote_ids["post_id"] == second.remote_ids["post_id"]
    assert first.remote_ids["media_id"] == second.remote_ids["media_id"]
    assert wordpress.count("posts", publish_item.generation_key) == 1
    assert wordpress.count("media", publish_item.generation_key) == 1
    post = wordpress.get(f"/wp/v2/posts/{first.remote_ids['post_id']}", context="edit")
    assert post["featured_media"] == first.remote_ids["media_id"]
