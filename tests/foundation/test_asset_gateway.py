"""The gateway's new-asset route: S3 notifications and CMS hooks become brandforge.asset.created."""

from __future__ import annotations

import json

import pytest
from prefect_aws import S3Bucket
from pydantic import SecretStr
from starlette.testclient import TestClient

from brandforge.deployments.gateway import build_app
from brandforge.models import ASSET_CREATED_EVENT

TOKEN = "test-asset-token"


@pytest.fixture
def gateway(demo_profile):
    demo_profile.source = S3Bucket(bucket_name="shop-photos", bucket_folder="catalog")
    demo_profile.webhook_token = SecretStr(TOKEN)
    events: list[dict] = []

    def load(client):
        if client != "demo":
            raise ValueError("no such block")
        return demo_profile

    client = TestClient(build_app({}, emit=lambda **e: events.append(e), load_profile=load))
    return client, events


def s3_notification(*keys, event="ObjectCreated:Put", bucket="shop-photos"):
    return {"Records": [{"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": k, "eTag": f"e-{k}"}}} for k in keys]}


def post(client, body, token=TOKEN, path="/assets/demo"):
    return client.post(path, content=json.dumps(body), headers={"Authorization": f"Bearer {token}"})


def test_s3_notification_becomes_asset_events(gateway):
    client, events = gateway
    r = post(client, s3_notification("catalog/red+mug.jpg", "catalog/archive/old.jpg", "elsewhere/x.jpg"))
    assert r.status_code == 200 and r.json()["emitted"] == ["red mug.jpg"]
    (event,) = events
    assert event["event"] == ASSET_CREATED_EVENT
    assert event["resource"]["brandforge.client"] == "demo" and event["resource"]["prefect.resource.id"].startswith("brandforge.asset.demo.")
    assert event["payload"] == {"uri": "s3://shop-photos/catalog/red mug.jpg", "name": "red mug.jpg"}


def test_sns_and_eventbridge_envelopes(gateway):
    client, events = gateway
    sns = {"Type": "Notification", "Message": json.dumps(s3_notification("catalog/a.png"))}
    bridge = {"source": "aws.s3", "detail-type": "Object Created",
              "detail": {"bucket": {"name": "shop-photos"}, "object": {"key": "catalog/b.png", "etag": "x"}}}
    assert post(client, sns).json()["emitted"] == ["a.png"]
    assert post(client, bridge).json()["emitted"] == ["b.png"]
    assert [e["payload"]["name"] for e in events] == ["a.png", "b.png"]


def test_repeated_delivery_emits_once_and_deletions_nothing(gateway):
    client, events = gateway
    post(client, s3_notification("catalog/a.png"))
    assert post(client, s3_notification("catalog/a.png")).json()["emitted"] == []
    assert post(client, s3_notification("catalog/a.png", event="ObjectRemoved:Delete")).json()["assets"] == []
    assert len(events) == 1


def test_cms_hook(gateway):
    client, events = gateway
    r = post(client, {"uri": "https://cms.example.test/uploads/shoe.jpg", "name": "shoe.jpg"})
    assert r.status_code == 200 and events[0]["payload"]["uri"].endswith("shoe.jpg")


@pytest.mark.parametrize(
    "body,token,path,status,message",
    [
        ({"uri": "x"}, "wrong", "/assets/demo", 401, "missing or wrong credentials"),
        # An unknown client gets the very answer a wrong token gets: clients cannot be enumerated.
        ({"uri": "x"}, TOKEN, "/assets/ghost", 401, "missing or wrong credentials"),
        ({"uri": "ftp://x"}, TOKEN, "/assets/demo", 422, "uri must be an s3://"),
        (s3_notification("catalog/a.png", bucket="other"), TOKEN, "/assets/demo", 422, "is not client 'demo'"),
        ([1, 2], TOKEN, "/assets/demo", 422, "JSON object"),
        ({"Records": [{"eventName": "ObjectCreated:Put"}]}, TOKEN, "/assets/demo", 422, "expected field 's3'"),
    ],
)
def test_bad_notifications_are_refused_clearly(gateway, body, token, path, status, message):
    client, events = gateway
    r = post(client, body, token=token, path=path)
    assert r.status_code == status and message in r.json()["error"]
    assert events == []
