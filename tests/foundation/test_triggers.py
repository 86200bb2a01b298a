"""Every real sender starts the runs it should; every hostile request is refused before any emission.

The gateway runs as an ASGI app (as in test_asset_gateway.py); SNS messages are signed by the test's
own CA-issued key and the signing certificate and SubscribeURL are served over https on 127.0.0.1.
"""

from __future__ import annotations

import json
import time

import pytest
from prefect.filesystems import LocalFileSystem
from prefect_aws import S3Bucket
from pydantic import SecretStr, ValidationError
from starlette.testclient import TestClient

from brandforge.blocks.providers.leonardo import LeonardoProvider
from brandforge.blocks.providers.replicate import ReplicateProvider, standard_webhook_key
from brandforge.blocks.sns import SnsVerifier
from brandforge.blocks.triggers import SnsSettings, StrapiTrigger
from brandforge.deployments.gateway import MAX_BODY_BYTES, build_app
from brandforge.models import Rejected
from tests.fakes import replicate as fake_replicate
from tests.fakes.base import Served
from tests.fakes.sns import CERT_PATH, TOPIC, FakeSns

TOKEN = "test-asset-token-0123456789"
STRAPI = "https://cms.example.test"


def s3_event(*keys, event="ObjectCreated:Put", bucket="shop-photos", version=None, sequencer=None, etag="same"):
    obj = lambda k: {"key": k, "eTag": etag, **({"versionId": version} if version else {}),  # noqa: E731
                     **({"sequencer": sequencer} if sequencer else {})}
    return {"Records": [{"eventName": event, "s3": {"bucket": {"name": bucket}, "object": obj(k)}} for k in keys]}


@pytest.fixture(scope="module")
def sns_host(tmp_path_factory):
    fake = FakeSns(tmp_path_factory.mktemp("sns"))
    with Served(fake.app, tls=fake.tls) as served:
        fake.url = served.url
        yield fake


@pytest.fixture
def profiles(demo_profile, tmp_path):
    demo_profile.source = S3Bucket(bucket_name="shop-photos", bucket_folder="catalog")
    demo_profile.webhook_token = SecretStr(TOKEN)
    demo_profile.sns = SnsSettings(topic_arns=[TOPIC])
    demo_profile.strapi = StrapiTrigger(base_url=STRAPI, collections={"product": "image"}, media_uploads=True)
    local = demo_profile.model_copy(update={"client_id": "local", "source": LocalFileSystem(basepath=str(tmp_path / "cat"))})
    return {"demo": demo_profile, "local": local}


@pytest.fixture
def gateway(profiles, sns_host):
    events: list[dict] = []

    def load(client):
        if client not in profiles:
            raise ValueError("no such block")
        return profiles[client]

    verifier = SnsVerifier(host_pattern=r"127\.0\.0\.1", ssl_context=sns_host.client_ssl_context())
    client = TestClient(build_app({}, emit=lambda **e: events.append(e), load_profile=load, sns=verifier))
    return client, events


def post(client, body, token=TOKEN, path="/assets/demo", headers=None):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    h = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(path, content=content, headers={**h, **(headers or {})})


def sns_post(client, doc, path="/assets/demo"):
    return post(client, doc, token=None, path=path, headers={"x-amz-sns-message-type": doc["Type"],
                                                             "content-type": "text/plain; charset=UTF-8"})


# --------------------------------------------------------------------------- SNS


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_sns_notification_starts_a_run_without_a_token(gateway, sns_host, version):
    client, events = gateway
    r = sns_post(client, sns_host.notification(s3_event("catalog/mug.jpg", sequencer=f"00{version}"), version=version,
                                               subject="Amazon S3 Notification"))
    assert r.status_code == 200 and r.json()["emitted"] == ["mug.jpg"]
    assert events[0]["payload"] == {"uri": "s3://shop-photos/catalog/mug.jpg", "name": "mug.jpg"}


def test_signing_certificate_is_fetched_once(gateway, sns_host):
    client, events = gateway
    before = sns_host.hits.count(CERT_PATH)
    for i in range(3):
        assert sns_post(client, sns_host.notification(s3_event(f"catalog/{i}.jpg"))).status_code == 200
    assert sns_host.hits.count(CERT_PATH) - before <= 1 and len(events) == 3


def test_subscription_is_confirmed_and_unsubscribe_recorded(gateway, sns_host, profiles):
    client, events = gateway
    doc = sns_host.message("SubscriptionConfirmation", "You have chosen to subscribe …")
    r = sns_post(client, doc)
    assert r.status_code == 200 and r.json()["status"] == "confirmed" and doc["Token"] in sns_host.confirmations
    profiles["demo"].sns.confirm_subscriptions = False
    pending = sns_host.message("SubscriptionConfirmation", "…")
    r = sns_post(client, pending)
    assert r.json()["status"] == "pending" and "SubscribeURL" in r.json()["action"]
    assert pending["Token"] not in sns_host.confirmations
    r = sns_post(client, sns_host.message("UnsubscribeConfirmation", "…"))
    assert r.status_code == 200 and r.json() == {"status": "recorded", "unsubscribed": TOPIC}
    assert events == []


def test_forged_tampered_and_foreign_sns_messages_are_refused(gateway, sns_host):
    from cryptography.hazmat.primitives.asymmetric import rsa

    client, events = gateway
    forged = sns_host.notification(s3_event("catalog/x.jpg"), key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    tampered = sns_host.notification(s3_event("catalog/x.jpg"))
    tampered["Message"] = json.dumps(s3_event("catalog/evil.jpg"))
    hits = len(sns_host.hits)
    off_host = [sns_host.notification(s3_event("catalog/x.jpg"), cert_url=url) for url in (
        "https://evil.example/cert.pem", f"http://127.0.0.1:{sns_host.url.rsplit(':', 1)[1]}{CERT_PATH}",
        "https://169.254.169.254/cert.pem", "https://0x7f000001/cert.pem")]
    for doc, why in [(forged, "does not match"), (tampered, "does not match"), *[(d, "refused") for d in off_host]]:
        r = sns_post(client, doc)
        assert r.status_code == 401 and why in r.json()["error"], r.json()
    unsigned = sns_host.notification(s3_event("catalog/x.jpg"))
    unsigned["SignatureVersion"] = "3"
    assert sns_post(client, unsigned).status_code == 401
    bad_confirm = sns_host.message("SubscriptionConfirmation", "…", subscribe_url="https://evil.example/confirm")
    r = sns_post(client, bad_confirm)
    assert r.status_code == 422 and "SubscribeURL" in r.json()["error"]
    assert sns_host.hits[hits:].count("/confirm") == 0 and events == []


def test_stale_and_future_sns_messages_are_refused_before_the_certificate_is_fetched(gateway, sns_host):
    import datetime as dt

    client, events = gateway
    now = dt.datetime.now(dt.timezone.utc)
    hits = len(sns_host.hits)
    for sent, said in ((now - dt.timedelta(hours=1, minutes=1), "s old"), (now + dt.timedelta(hours=2), "in the future")):
        r = sns_post(client, sns_host.notification(s3_event("catalog/replay.jpg"), sent=sent))
        assert r.status_code == 401 and said in r.json()["error"] and "3600 s" in r.json()["error"], r.json()
    odd = sns_host.notification(s3_event("catalog/replay.jpg"))
    odd["Timestamp"] = "yesterday"
    assert "not an ISO 8601 time" in sns_post(client, odd).json()["error"]
    assert sns_host.hits[hits:] == [] and events == []
    fresh = sns_host.notification(s3_event("catalog/fresh.jpg"), sent=now - dt.timedelta(minutes=59))
    assert sns_post(client, fresh).json()["emitted"] == ["fresh.jpg"]
    strict = SnsVerifier(host_pattern=r"127\.0\.0\.1", ssl_context=sns_host.client_ssl_context(), max_age_s=60)
    from brandforge.blocks.sns import SnsRejected

    with pytest.raises(SnsRejected, match="more than 60 s off"):
        strict.verify(fresh)


def test_unlisted_topic_and_unknown_client_get_the_same_answer(gateway, sns_host):
    client, events = gateway
    other = sns_post(client, sns_host.notification(s3_event("catalog/x.jpg"), topic="arn:aws:sns:eu-west-1:999:other"))
    ghost = sns_post(client, sns_host.notification(s3_event("catalog/x.jpg")), path="/assets/ghost")
    assert other.status_code == ghost.status_code == 403 and other.json() == ghost.json()
    assert events == []


# --------------------------------------------------------------------------- SQS, EventBridge, dedupe


def test_sqs_batches_are_unwrapped(gateway, sns_host):
    client, events = gateway
    sqs = {"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": json.dumps(s3_event("catalog/a.jpg"))},
                       {"messageId": "m2", "eventSource": "aws:sqs",
                        "body": json.dumps({"Type": "Notification", "Message": json.dumps(s3_event("catalog/b.jpg"))})},
                       {"messageId": "m3", "eventSource": "aws:sqs", "body": json.dumps({"Event": "s3:TestEvent"})}]}
    r = post(client, sqs)
    assert r.status_code == 200 and r.json()["emitted"] == ["a.jpg", "b.jpg"]


def test_test_events_and_deletions_are_answered_honestly(gateway):
    client, events = gateway
    r = post(client, {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "shop-photos"})
    assert r.status_code == 200 and r.json()["status"] == "ignored" and "TestEvent" in r.json()["reason"]
    r = post(client, s3_event("catalog/a.jpg", event="ObjectRemoved:Delete"))
    assert r.json()["status"] == "ignored" and "ObjectRemoved" in r.json()["reason"]
    bridge = {"source": "aws.s3", "detail-type": "Object Deleted", "detail": {"bucket": {"name": "shop-photos"}, "object": {"key": "catalog/a.jpg"}}}
    assert post(client, bridge).json()["status"] == "ignored"
    assert events == []


def test_a_new_version_with_the_same_bytes_is_a_new_asset_event(gateway):
    client, events = gateway
    assert post(client, s3_event("catalog/a.jpg", version="v1", sequencer="01")).json()["emitted"] == ["a.jpg"]
    assert post(client, s3_event("catalog/a.jpg", version="v1", sequencer="01")).json()["emitted"] == []  # a retry
    assert post(client, s3_event("catalog/a.jpg", version="v2", sequencer="02")).json()["emitted"] == ["a.jpg"]
    assert post(client, s3_event("catalog/a.jpg", sequencer="03")).json()["emitted"] == ["a.jpg"]  # re-upload, unversioned
    bridge = {"source": "aws.s3", "detail-type": "Object Created",
              "detail": {"bucket": {"name": "shop-photos"}, "object": {"key": "catalog/a.jpg", "etag": "same",
                                                                       "version-id": "v3", "sequencer": "04"}}}
    assert post(client, bridge).json()["emitted"] == ["a.jpg"]
    assert len(events) == 4 and len({str(e["id"]) for e in events}) == 4


# --------------------------------------------------------------------------- Strapi


def image(name="mug.jpg", h="mug_abc", mime="image/jpeg"):
    return {"id": 3, "name": name, "hash": h, "mime": mime, "url": f"/uploads/{h}.jpg", "width": 800, "height": 600}


def strapi(event, v5=False, model="product", **extra):
    body = {"event": event, "createdAt": "2026-12-04T17:00:00.000Z", **extra}
    if event.startswith("entry."):
        entry = {"id": 7, "title": "Red mug", "category": {"id": 2, "name": "kitchen"}, "locale": "en",
                 "tags": [{"id": 1, "name": "mugs"}, "red"], "image": image()}
        if v5:
            entry["documentId"] = "abc123xyz"
        body.update(model=model, uid=f"api::{model}.{model}", entry=entry)
    else:
        body["media"] = image()
    return body


@pytest.mark.parametrize("v5", [False, True], ids=["v4", "v5"])
def test_strapi_entry_events_start_a_run_for_the_media_field(gateway, v5):
    client, events = gateway
    for event in ("entry.create", "entry.update", "entry.publish"):
        r = post(client, strapi(event, v5=v5), headers={"X-Strapi-Event": event})
        assert r.status_code == 200 and r.json()["assets"] == ["mug.jpg"], r.json()
    assert len(events) == 1  # the same media file: one run
    payload = events[0]["payload"]
    assert (payload["uri"], payload["name"]) == (f"{STRAPI}/uploads/mug_abc.jpg", "mug.jpg")
    record = payload["record"]  # the entry is the asset's record
    assert record["collection"] == "product" and record["id"] == 7 and record["title"] == "Red mug"
    assert record["category"] == "kitchen" and record["locale"] == "en" and record["tags"] == ["mugs", "red"]
    assert record.get("documentId") == ("abc123xyz" if v5 else None)


@pytest.mark.parametrize("v5", [False, True], ids=["v4", "v5"])
def test_strapi_other_events_are_answered_honestly(gateway, v5):
    client, events = gateway
    for event in ("media.update", "media.delete"):
        r = post(client, strapi(event, v5=v5))
        assert r.status_code == 200 and r.json()["status"] == "ignored" and event in r.json()["reason"]
    r = post(client, strapi("entry.create", v5=v5, model="article"))
    assert r.json()["status"] == "ignored" and "'article' is not configured" in r.json()["reason"]
    r = post(client, strapi("entry.rename", v5=v5))
    assert r.status_code == 422 and "entry.create" in r.json()["error"]
    assert events == []
    r = post(client, strapi("media.create", v5=v5))
    assert r.status_code == 200 and r.json()["emitted"] == ["mug.jpg"]


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("v5", [False, True], ids=["v4", "v5"])
def test_strapi_unpublish_and_delete_withdraw_what_was_published(gateway, profiles, tmp_path, v5):
    """entry.unpublish / entry.delete run the withdraw flow: the target entry is unpublished (v4) or deleted,
    the ledger row marked withdrawn, the answer lists it; a repeated delivery withdraws nothing."""
    import asyncio

    from PIL import Image

    from brandforge.blocks.ledger import Ledger
    from brandforge.blocks.targets.strapi import StrapiSite
    from brandforge.models import LedgerEntry, PublishItem
    from tests.fakes.strapi import FakeStrapi, serve_strapi

    client, events = gateway
    fake = FakeStrapi(version="v5" if v5 else "v4")
    with serve_strapi(fake):
        target = StrapiSite(url=fake.url, api_token=fake.token, version=fake.version, timeout_seconds=10)
        profiles["demo"].target = target
        ledger = Ledger(url=profiles["demo"].ledger.url)
        source = f"{STRAPI}/uploads/mug_abc.jpg"  # the entry's media, as its run recorded it
        rows = {}
        for name, uri, target_key in (("mug", source, target.target_key), ("other", f"{STRAPI}/uploads/cup.jpg",
                                      target.target_key), ("elsewhere", source, "another-target")):
            Image.new("RGB", (32, 32), "red").save(tmp_path / f"{name}.jpg")
            item = PublishItem(client="demo", name=f"{name}.jpg", generation_key=f"{name}-{'0' * 60}",
                               image_path=str(tmp_path / f"{name}.jpg"), source_uri=uri, title=name)
            receipt = asyncio.run(target.publish(item))
            rows[name] = ledger.record(LedgerEntry(client="demo", source_uri=uri, generation_key=item.generation_key,
                                                   state="published", target="strapi", target_key=target_key,
                                                   remote_ids=receipt.remote_ids, published_url=receipt.url))
        r = post(client, strapi("entry.unpublish", v5=v5))
        assert r.status_code == 200 and r.json()["status"] == "withdrawn", r.json()
        [taken] = r.json()["withdrawn"]
        [kept] = r.json()["kept"]
        assert taken["name"] == "mug_abc.jpg" and taken["detail"].endswith(
            "deleted (Strapi 5's REST API cannot unpublish)" if v5 else "unpublished (draft)")
        assert "another" in kept["detail"]
        live = [e["title"] for e in fake.entries if e.get("publishedAt")]
        assert live == ["other", "elsewhere"]
        by_id = dict(ledger.rows(client="demo"))
        assert by_id[rows["mug"]].state == "withdrawn"
        assert by_id[rows["mug"]].reason.startswith(f"Strapi entry.unpublish of product entry {'abc123xyz' if v5 else 7}: ")
        assert by_id[rows["other"]].state == by_id[rows["elsewhere"]].state == "published"

        for _ in range(2):  # the entry is then deleted (twice: Strapi or a person repeats it)
            r = post(client, strapi("entry.delete", v5=v5))
            assert r.status_code == 200 and r.json()["status"] == "nothing to withdraw" and r.json()["withdrawn"] == []
        r = post(client, strapi("entry.delete", v5=v5, model="article"))
        assert r.json()["status"] == "ignored" and "'article' is not configured" in r.json()["reason"]
        assert [e["title"] for e in fake.entries] == (["other", "elsewhere"] if v5 else ["mug", "other", "elsewhere"])
    assert events == []


def test_strapi_without_configuration_says_so(gateway, profiles):
    client, events = gateway
    profiles["demo"].strapi = None
    r = post(client, strapi("entry.create"))
    assert r.status_code == 422 and "no Strapi trigger configured" in r.json()["error"] and events == []


# --------------------------------------------------------------------------- hostile requests


def test_oversized_bodies_are_refused_while_streaming_before_authentication(gateway):
    client, events = gateway

    def chunks():
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    for path in ("/assets/demo", "/assets/ghost", "/webhooks/replicate"):
        r = client.post(path, content=chunks(), headers={"Authorization": "Bearer wrong"})
        assert r.status_code in (413, 404) and events == []
    r = client.post("/assets/demo", content=chunks())
    assert r.status_code == 413 and "larger than" in r.json()["error"]


@pytest.mark.parametrize("body,status,said", [
    (b"{not json", 400, "not JSON"),
    ({"foo": 1}, 422, "expected an S3 event notification"),
    ([1, 2], 422, "JSON object"),
    ({"Records": [1]}, 422, "Records[0] must be an object"),
    ({"Type": "Notification", "Message": ["x"]}, 422, "SNS Message must be a JSON string"),
    ({"uri": ["file:///etc/passwd"]}, 422, "uri must be"),
    ({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "shop-photos"}, "object": {"key": 5}}}]}, 422, "key"),
    ({"uri": "http://169.254.169.254/latest/meta-data/iam", "name": "x.jpg"}, 422, "link-local"),
    ({"uri": "http://0x7f000001/x.jpg", "name": "x.jpg"}, 422, "non-canonical numeric"),
    ({"uri": "http://[::ffff:127.0.0.1]/x.jpg", "name": "x.jpg"}, 422, "embeds an IPv4 address"),
    ({"uri": "http://foo.localhost/x.jpg", "name": "x.jpg"}, 422, "localhost"),
    ({"uri": "s3://other-bucket/catalog/x.jpg", "name": "x.jpg"}, 422, "source bucket"),
    ({"uri": "file:///etc/passwd", "name": "passwd"}, 422, "no local source storage root"),
    ({"uri": "https://cdn.example.test/x.jpg", "name": "evil\u202egpj.exe"}, 422, "bidi"),
    ({"uri": "https://cdn.example.test/x.jpg", "name": "a\x00b.jpg"}, 422, "control"),
    ({"uri": "https://cdn.example.test/x.jpg", "name": "x" * 300 + ".jpg"}, 422, "1-240 characters"),
])
def test_hostile_and_odd_bodies_get_an_honest_answer_and_emit_nothing(gateway, body, status, said):
    client, events = gateway
    r = post(client, body)
    assert r.status_code == status and said in r.json()["error"], r.json()
    assert events == []


def test_file_uris_only_under_the_clients_own_root(gateway, tmp_path):
    client, events = gateway
    (tmp_path / "cat").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "cat" / "ok.jpg").write_bytes(b"x")
    r = post(client, {"uri": (tmp_path / "other" / "x.jpg").as_uri(), "name": "x.jpg"}, path="/assets/local")
    assert r.status_code == 422 and "outside the client's source storage root" in r.json()["error"] and events == []
    r = post(client, {"uri": (tmp_path / "cat" / "ok.jpg").as_uri(), "name": "ok.jpg"}, path="/assets/local")
    assert r.status_code == 200 and r.json()["emitted"] == ["ok.jpg"]


def test_one_clients_url_allow_list_does_not_open_the_door_for_another(gateway, profiles):
    client, events = gateway
    profiles["demo"].url_allow = ["10.20.0.0/16"]  # demo's intranet DAM; "local" allows nothing extra
    profiles["local"].webhook_token = SecretStr(TOKEN)
    dam = {"uri": "http://10.20.0.5/dam/mug.jpg", "name": "mug.jpg"}
    r = post(client, dam, path="/assets/local")
    assert r.status_code == 422 and "private" in r.json()["error"] and events == []
    r = post(client, {"uri": "http://10.21.0.5/x.jpg", "name": "x.jpg"})
    assert r.status_code == 422 and "private" in r.json()["error"] and events == []  # outside demo's block
    r = post(client, dam)
    assert r.status_code == 200 and r.json()["emitted"] == ["mug.jpg"]


# --------------------------------------------------------------------------- Standard Webhooks, Leonardo


def test_standard_webhook_secrets_are_read_as_the_reference_libraries_read_them():
    key = b"0123456789abcdef01234567"
    import base64

    b64 = base64.b64encode(key).decode()
    for secret in (f"whsec_{b64}", b64, f"whsec_{b64.rstrip('=')}", b64.rstrip("=")):
        assert standard_webhook_key(secret) == key
    for secret, why in (("whsec_", "empty"), ("", "empty"), ("whsec_c2VjcmV0", "too short"), ("whsec_!!!", "not base64")):
        with pytest.raises(ValueError, match=why):
            standard_webhook_key(secret)
        if secret:
            with pytest.raises(ValidationError, match=why):
                ReplicateProvider(webhook_secret=secret)
    with pytest.raises(ValidationError, match="webhook_secret is empty"):
        ReplicateProvider(webhook_url="https://hooks.example.test/webhooks/replicate")


def test_a_signed_but_odd_replicate_body_is_422_not_500():
    block = ReplicateProvider(webhook_secret=fake_replicate.WEBHOOK_SECRET)
    events: list[dict] = []
    client = TestClient(build_app({"replicate": block}, emit=lambda **e: events.append(e)))
    for body in (b"[1, 2]", b'{"status": "succeeded"}', b"not json"):
        ts = str(int(time.time()))
        headers = {"webhook-id": "msg_1", "webhook-timestamp": ts,
                   "webhook-signature": fake_replicate.sign(fake_replicate.WEBHOOK_SECRET, "msg_1", ts, body)}
        r = client.post("/webhooks/replicate", content=body, headers=headers)
        assert r.status_code == 422, r.text
    assert events == []


def test_leonardo_replay_check_needs_the_timestamp():
    block = LeonardoProvider(webhook_callback_api_key="leonardo-callback-key-fake")
    body = json.dumps({"type": "image_generation.complete", "data": {"object": {"id": "g1", "status": "COMPLETE", "images": []}}})
    with pytest.raises(Rejected, match="lacks its timestamp"):
        block.verify_webhook({"authorization": "Bearer leonardo-callback-key-fake"}, body.encode())


# --------------------------------------------------------------------------- the WordPress plugin's signed calls


def wp_signed(body: dict, secret: str = TOKEN, ts: int | None = None) -> tuple[bytes, dict]:
    import hashlib
    import hmac

    raw = json.dumps(body).encode()
    stamp = str(ts if ts is not None else int(time.time()))
    sig = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    return raw, {"X-Brandforge-Timestamp": stamp, "X-Brandforge-Signature": sig, "Content-Type": "application/json"}


WP_UPLOAD = {"source": "wordpress", "event": "media.create", "site": "https://shop.example.test",
             "attachment": {"id": 41, "url": "https://shop.example.test/wp-content/uploads/2026/12/mug.jpg",
                            "mime": "image/jpeg", "title": "mug", "parent": 0}}


def test_wordpress_signed_calls_are_verified(gateway):
    client, events = gateway
    raw, headers = wp_signed(WP_UPLOAD)
    r = client.post("/assets/demo", content=raw, headers=headers)
    assert r.status_code == 200 and r.json()["emitted"] == ["mug.jpg"]
    assert events[0]["payload"]["record"]["attachment_id"] == 41
    stale_raw, stale = wp_signed({**WP_UPLOAD, "attachment": {**WP_UPLOAD["attachment"], "id": 42}}, ts=int(time.time()) - 3600)
    forged_raw, forged = wp_signed(WP_UPLOAD, secret="not-the-secret")
    tampered = raw.replace(b"mug.jpg", b"evil.jpg")
    for body, h in ((stale_raw, stale), (forged_raw, forged), (tampered, headers)):
        r = client.post("/assets/demo", content=body, headers=h)
        assert r.status_code == 401 and r.json()["error"] == "missing or wrong credentials for this client"
    r = client.post("/assets/ghost", content=raw, headers=headers)
    assert r.status_code == 401 and r.json()["error"] == "missing or wrong credentials for this client"
    odd_raw, odd = wp_signed({**WP_UPLOAD, "event": "post.delete"})
    assert client.post("/assets/demo", content=odd_raw, headers=odd).status_code == 422
    assert len(events) == 1


# --------------------------------------------------------------------------- a bucket shared by several clients


@pytest.fixture
def shared(demo_profile, s3_bucket_block, sns_host):
    """Two clients (acme by key prefix, globex by object tag) uploading to one moto bucket."""
    from brandforge.blocks.triggers import SharedBucket

    bucket = s3_bucket_block.bucket_name
    s3 = s3_bucket_block.credentials.get_s3_client()
    for key, tag in (("acme/mug.jpg", None), ("uploads/cup.jpg", "globex"), ("uploads/untagged.jpg", None),
                     ("uploads/evil.jpg", "initech")):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x", **({"Tagging": f"brandforge-client={tag}"} if tag else {}))
    profiles = {
        "acme": demo_profile.model_copy(update={"client_id": "acme", "source": s3_bucket_block.model_copy(update={"bucket_folder": "acme"})}),
        "globex": demo_profile.model_copy(update={"client_id": "globex", "source": s3_bucket_block.model_copy(update={"bucket_folder": "uploads"})}),
    }
    route = SharedBucket(bucket=bucket, key_prefixes={"acme/": "acme"}, tag_clients=["globex"],
                         credentials=s3_bucket_block.credentials, webhook_token=SecretStr(TOKEN),
                         sns=SnsSettings(topic_arns=[TOPIC]))
    events: list[dict] = []

    def load(what, name):
        if name not in what:
            raise ValueError("no such block")
        return what[name]

    verifier = SnsVerifier(host_pattern=r"127\.0\.0\.1", ssl_context=sns_host.client_ssl_context())
    app = build_app({}, emit=lambda **e: events.append(e), load_profile=lambda n: load(profiles, n),
                    load_bucket=lambda n: load({"shop": route}, n), sns=verifier)
    return TestClient(app), events, bucket


def test_a_shared_bucket_gives_each_object_to_its_client_by_prefix_or_tag(shared, sns_host):
    client, events, bucket = shared
    r = post(client, s3_event("acme/mug.jpg", "uploads/cup.jpg", bucket=bucket, sequencer="01"), path="/buckets/shop")
    assert r.status_code == 200 and r.json()["clients"] == {"acme": ["mug.jpg"], "globex": ["cup.jpg"]}, r.json()
    assert [(e["resource"]["brandforge.client"], e["payload"]["uri"]) for e in events] == [
        ("acme", f"s3://{bucket}/acme/mug.jpg"), ("globex", f"s3://{bucket}/uploads/cup.jpg")]
    sqs = {"Records": [{"eventSource": "aws:sqs", "body": json.dumps(s3_event("uploads/cup.jpg", bucket=bucket, sequencer="02"))}]}
    assert post(client, sqs, path="/buckets/shop").json()["clients"] == {"globex": ["cup.jpg"]}
    signed = sns_host.notification(s3_event("acme/mug.jpg", bucket=bucket, sequencer="03"))
    assert sns_post(client, signed, path="/buckets/shop").json()["clients"] == {"acme": ["mug.jpg"]}
    assert len(events) == 4


@pytest.mark.parametrize("key,why", [
    ("uploads/untagged.jpg", "has no 'brandforge-client' tag: its client is unknown"),
    ("uploads/evil.jpg", "names client 'initech', which shared bucket"),
    ("uploads/gone.jpg", "its tags could not be read (NoSuchKey)"),
])
def test_an_object_whose_client_cannot_be_told_refuses_the_delivery(shared, key, why):
    client, events, bucket = shared
    r = post(client, s3_event("acme/mug.jpg", key, bucket=bucket), path="/buckets/shop")
    assert r.status_code == 422 and why in r.json()["error"] and r.json()["emitted"] == [], r.json()
    assert events == []


def test_a_shared_bucket_route_needs_its_own_credentials(shared, sns_host):
    client, events, bucket = shared
    for path, token in (("/buckets/shop", "wrong"), ("/buckets/ghost", TOKEN), ("/buckets/shop", None)):
        r = post(client, s3_event("acme/mug.jpg", bucket=bucket), token=token, path=path)
        assert r.status_code == 401 and r.json()["error"] == "missing or wrong credentials for this client"
    r = sns_post(client, sns_host.notification(s3_event("acme/mug.jpg", bucket=bucket)), path="/buckets/ghost")
    assert r.status_code == 403
    r = post(client, s3_event("acme/mug.jpg", bucket="another-bucket"), path="/buckets/shop")
    assert r.status_code == 422 and "is not the shared bucket" in r.json()["error"]
    assert events == []
