"""The URL guard (blocks/url_guard.py) through the real HTTP layer, against a server on 127.0.0.1
that counts every request: every hostile form is refused, with its reason, before any connection."""

from __future__ import annotations

import asyncio

import pytest

from brandforge.blocks.http import send, send_sync
from brandforge.blocks.url_guard import ALLOW_ENV, MAX_BYTES_ENV, UrlPolicy, UrlRefused, check_url
from brandforge.models import Rejected

ALLOW_TESTS = UrlPolicy(allow=("127.0.0.1",))


def hostile_forms(port: int) -> dict[str, tuple[str, str]]:
    """The URL forms the issue probed and more (the redirect forms are tested below): form -> (url, reason part)."""
    return {
        "[::1]": (f"http://[::1]:{port}/", "loopback"),
        "0x7f000001": (f"http://0x7f000001:{port}/", "non-canonical numeric"),
        "2130706433": (f"http://2130706433:{port}/", "non-canonical numeric"),
        "127.1": (f"http://127.1:{port}/", "non-canonical numeric"),
        "0177.0.0.1": (f"http://0177.0.0.1:{port}/", "non-canonical numeric"),
        "[::ffff:127.0.0.1]": (f"http://[::ffff:127.0.0.1]:{port}/", "embeds an IPv4 address"),
        "localhost": (f"http://localhost:{port}/", "localhost"),
        "foo.localhost": (f"http://foo.localhost:{port}/", "localhost"),
        "127.0.0.2": (f"http://127.0.0.2:{port}/", "loopback"),
        "0.0.0.0": (f"http://0.0.0.0:{port}/", "unspecified"),
        "169.254.169.254": ("http://169.254.169.254/latest/meta-data/", "link-local"),
        "metadata.google.internal": ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        "[fd00:ec2::254]": ("http://[fd00:ec2::254]/latest/meta-data/", "private"),
        "10.0.0.1": ("http://10.0.0.1/", "private"),
        "224.0.0.1": ("http://224.0.0.1/", "multicast"),
        "file://": ("file:///etc/passwd", "scheme 'file'"),
        "gopher://": (f"gopher://127.0.0.1:{port}/", "scheme 'gopher'"),
        "user@": (f"http://user:pw@127.0.0.1:{port}/", "user info"),
        "LOCALHOST.": (f"http://LOCALHOST.:{port}/", "localhost"),
        "[::]": (f"http://[::]:{port}/", "unspecified"),
        "zone id": ("http://[fe80::1%25eth0]/", "zone identifiers"),
        "100.64.0.1 (CGNAT)": ("http://100.64.0.1/", "not a public address"),
    }


@pytest.mark.parametrize("form", list(hostile_forms(0)))
def test_every_hostile_form_is_refused_before_any_connection(internal, form):
    url, reason = hostile_forms(internal.port)[form]
    before = len(internal.hits)
    with pytest.raises(UrlRefused, match=reason):
        check_url(url, ALLOW_TESTS)
    with pytest.raises(Rejected, match=reason):
        asyncio.run(send("test", "GET", url, timeout_s=5))
    with pytest.raises(Rejected, match=reason):
        send_sync("test", "GET", url, timeout_s=5)
    assert len(internal.hits) == before


def test_the_allow_listed_spelling_is_reached_and_nothing_else(internal):
    resp = asyncio.run(send("test", "GET", f"{internal.url}/echo", timeout_s=5))
    assert resp.json()["host"] == f"127.0.0.1:{internal.port}"
    with pytest.raises(UrlRefused, match="loopback"):
        check_url(f"{internal.url}/echo", UrlPolicy())  # 127.0.0.1 itself, when not allow-listed


def test_a_name_is_pinned_to_its_resolved_address_and_keeps_its_host_header(internal, monkeypatch):
    policy = UrlPolicy(allow=("localhost",))
    checked = check_url(f"http://localhost:{internal.port}/echo", policy)
    assert checked.host == "localhost" and checked.address in ("127.0.0.1", "::1")
    if checked.address == "127.0.0.1":  # the server listens on IPv4 only
        monkeypatch.setenv(ALLOW_ENV, "127.0.0.1,localhost")
        resp = send_sync("test", "GET", f"http://localhost:{internal.port}/echo", timeout_s=5)
        assert resp.json()["host"] == f"localhost:{internal.port}"  # connected to the address, named the host


@pytest.mark.parametrize("target", ["http://localhost:{port}/echo", "http://169.254.169.254/latest/meta-data/",
                                    "http://[::ffff:127.0.0.1]:{port}/echo", "file:///etc/passwd"])
def test_each_redirect_is_checked_again(internal, target):
    target = target.format(port=internal.port)
    before = len(internal.hits)
    with pytest.raises(Rejected, match="refused"):
        asyncio.run(send("test", "GET", f"{internal.url}/redirect", params={"to": target}, timeout_s=5))
    assert [h["path"] for h in internal.hits[before:]] == ["/redirect"]  # the hop was never made


def test_credentials_go_only_to_the_configured_api_origin(internal):
    before = len(internal.hits)
    with pytest.raises(Rejected, match="they go only to the configured API origin"):
        asyncio.run(send("replicate", "GET", f"{internal.url}/echo", headers={"Authorization": "Bearer r8_secret"},
                         api_origin="https://api.replicate.com", timeout_s=5))
    with pytest.raises(Rejected, match="credentials"):
        asyncio.run(send("fal", "GET", f"{internal.url}/echo", headers={"Authorization": "Key k"}, timeout_s=5))
    assert len(internal.hits) == before
    ok = asyncio.run(send("replicate", "GET", f"{internal.url}/echo", headers={"Authorization": "Bearer r8_secret"},
                          api_origin=internal.url + "/v1", timeout_s=5))
    assert ok.json()["authorization"] == "Bearer r8_secret"


def test_answers_over_the_size_cap_are_refused(internal, monkeypatch):
    monkeypatch.setenv(MAX_BYTES_ENV, "100000")
    for path in ("/big", "/stream-big"):
        with pytest.raises(Rejected, match="larger than 100,000 bytes"):
            asyncio.run(send("test", "GET", f"{internal.url}{path}", timeout_s=10))


def test_an_internal_error_page_is_summarised_not_copied(internal):
    with pytest.raises(Rejected) as info:
        asyncio.run(send("test", "GET", f"{internal.url}/forbidden", timeout_s=5))
    reason = info.value.reason
    assert "HTTP 403" in reason and "Forbidden" in reason and "internal-secret-token" not in reason
    assert len(reason) < 200


def test_a_clients_allow_list_opens_the_door_for_that_client_only(internal, demo_profile, monkeypatch):
    """`ClientProfile.url_allow` applies inside `client_url_allow` for that client; another client's context
    (or none) is refused as before, and nothing is fetched."""
    from brandforge.blocks.url_guard import client_url_allow
    from brandforge.models import AssetRejected
    from brandforge.tasks.load import download_source

    monkeypatch.delenv(ALLOW_ENV)  # only the profiles allow-list 127.0.0.1 here
    acme = demo_profile.model_copy(update={"client_id": "acme", "url_allow": ["127.0.0.1", "10.20.0.0/16"]})
    globex = demo_profile.model_copy(update={"client_id": "globex"})
    url = f"{internal.url}/image.png"
    with client_url_allow(acme.url_allow):
        assert download_source(url)[:8] == b"\x89PNG\r\n\x1a\n"
        with client_url_allow(globex.url_allow):  # a nested client replaces, never extends, the outer one
            with pytest.raises(AssetRejected, match="loopback"):
                download_source(url)
        check_url("http://10.20.3.4/x.jpg")
    before = len(internal.hits)
    for entries in (globex.url_allow, None):
        with client_url_allow(entries), pytest.raises(AssetRejected, match="loopback"):
            download_source(url)
        with client_url_allow(entries), pytest.raises(UrlRefused, match="private"):
            check_url("http://10.20.3.4/x.jpg")
    assert len(internal.hits) == before


@pytest.mark.parametrize("entry,why", [("0.0.0.0/0", "wider than a /8"), ("::/0", "wider than a /16"),
                                       ("", "empty"), ("0x7f000001", "non-canonical"), ("http://x/", "neither")])
def test_a_profile_allow_list_cannot_switch_the_guard_off(demo_profile, entry, why):
    from pydantic import ValidationError

    from brandforge.blocks.client_profile import ClientProfile

    data = demo_profile.model_dump(exclude={"url_allow"})
    with pytest.raises(ValidationError, match=why):
        ClientProfile(**data, url_allow=["cdn.example.test", entry])
