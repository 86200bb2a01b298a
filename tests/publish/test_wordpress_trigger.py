"""The WordPress loop on the real WordPress: a photo uploaded to the media library → the must-use plugin
(scripts/wordpress/brandforge-trigger.php) signs and posts it to the gateway on a real socket → the asset
event → a real process_asset run loads it from WordPress (through the URL guard) → the styled image is
published back as a draft whose meta links it to the source. brandforge's own uploads start nothing."""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic import SecretStr

from brandforge.deployments.gateway import build_app
from brandforge.models import AssetRef
from tests.conftest import DEMO_CATALOG
from tests.fakes.base import Served

pytestmark = pytest.mark.usefixtures("prefect_server")

SECRET = "wp-shared-secret-7d1c9e"


def rest(wordpress, method: str, route: str, **kwargs) -> httpx.Response:
    resp = httpx.request(method, f"{wordpress.url}/", params={"rest_route": route}, auth=(wordpress.user, wordpress.app_password),
                         timeout=30, **kwargs)
    resp.raise_for_status()
    return resp


def upload(wordpress, name: str) -> dict:
    return rest(wordpress, "POST", "/wp/v2/media", content=(DEMO_CATALOG / "coffee-cup.jpg").read_bytes(),
                headers={"Content-Type": "image/jpeg", "Content-Disposition": f'attachment; filename="{name}"'}).json()


def wait_for(events: list[dict], count: int) -> None:
    for _ in range(40):  # the plugin posts at the end of WordPress's request
        if len(events) >= count:
            return
        time.sleep(0.25)


@pytest.fixture
def wired(wordpress, demo_profile):
    demo_profile.webhook_token = SecretStr(SECRET)
    events: list[dict] = []
    app = build_app({}, emit=lambda **e: events.append(e), load_profile=lambda c: demo_profile if c == "demo" else (_ for _ in ()).throw(ValueError(c)))
    with Served(app) as gateway:
        rest(wordpress, "POST", "/wp/v2/settings", json={"brandforge_gateway_url": f"{gateway.url}/assets/demo",
                                                         "brandforge_gateway_secret": SECRET})
        try:
            yield events
        finally:
            rest(wordpress, "POST", "/wp/v2/settings", json={"brandforge_gateway_url": "", "brandforge_gateway_secret": ""})


def test_an_upload_starts_a_run_and_the_result_is_published_back_as_a_draft(wordpress, wired, demo_profile, demo_state):
    events = wired
    media = upload(wordpress, "wp-mug.jpg")
    wait_for(events, 1)
    assert len(events) == 1
    payload = events[0]["payload"]
    assert payload["uri"] == media["source_url"] and payload["name"] == media["source_url"].rsplit("/", 1)[-1]
    assert payload["record"]["attachment_id"] == media["id"] and payload["record"]["event"] == "media.create"

    from brandforge.flows.process_asset import process_asset

    asset = AssetRef(client="demo", uri=payload["uri"], name=payload["name"])
    profile = demo_profile.model_copy(update={"target": wordpress.site(status="draft")})
    outcome = process_asset(asset, profile=profile, work_dir=str(demo_state / "work"))
    assert outcome.state == "published", outcome.reason
    [post] = wordpress.get("/wp/v2/posts", brandforge_generation_key=outcome.output_key, status="any", context="edit")
    assert post["status"] == "draft" and post["meta"]["_source_image"] == media["source_url"]
    # The styled image brandforge uploaded carries its generation key: it announced nothing.
    time.sleep(1)
    assert len(events) == 1


def test_a_wrong_secret_announces_nothing(wordpress, wired):
    events = wired
    rest(wordpress, "POST", "/wp/v2/settings", json={"brandforge_gateway_secret": "not-the-secret"})
    upload(wordpress, "forged.jpg")
    time.sleep(1)
    assert events == []
