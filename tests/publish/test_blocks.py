"""The target blocks save and load through Prefect, alone and inside a ClientProfile."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block

from brandforge.blocks.client_profile import ClientProfile
from brandforge.blocks.targets.s3 import S3Target
from brandforge.blocks.targets.strapi import StrapiSite
from brandforge.blocks.targets.wordpress import WordPressSite

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_profile_with_a_wordpress_target_round_trips(demo_profile):
    site = WordPressSite(url="http://127.0.0.1:8089/", username="admin", application_password="abcd efgh", post_type="pages")
    profile = demo_profile.model_copy(update={"target": site, "source_handling": "tag"})
    profile.save("publish-test-wp", overwrite=True)

    loaded = ClientProfile.load("publish-test-wp")

    assert isinstance(loaded.target, WordPressSite) and loaded.target.url == "http://127.0.0.1:8089"
    assert loaded.target.application_password.get_secret_value() == "abcd efgh"
    assert loaded.source_handling == "tag" and loaded.target.post_type == "pages"
    assert "abcd efgh" not in repr(loaded.target)


def test_strapi_and_s3_targets_load_by_slug(s3_bucket_block):
    StrapiSite(url="http://127.0.0.1:1337/api", api_token="tok", version="v4").save("publish-test-strapi", overwrite=True)
    S3Target(bucket=s3_bucket_block, public_base_url="https://cdn.example.invalid").save("publish-test-s3", overwrite=True)

    strapi = Block.load("brandforge-strapi-site/publish-test-strapi")
    s3 = Block.load("brandforge-s3-target/publish-test-s3")

    assert isinstance(strapi, StrapiSite) and strapi.url == "http://127.0.0.1:1337" and strapi.version == "v4"
    assert isinstance(s3, S3Target) and s3.bucket.bucket_name == s3_bucket_block.bucket_name


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (WordPressSite, {"url": "shop.example.com", "username": "a", "application_password": "p"}, "url must be the site's http"),
        (WordPressSite, {"url": "http://x", "username": "a", "application_password": "p", "post_type": "My Posts"}, "post_type must be a REST base"),
        (WordPressSite, {"url": "http://x", "username": "a", "application_password": "p", "status": "live"}, "'publish', 'draft', 'pending' or 'private'"),
        (StrapiSite, {"url": "http://x", "api_token": "t", "version": "v3"}, "'v4' or 'v5'"),
        (StrapiSite, {"url": "http://x", "api_token": "t", "media_field": "cover image"}, "media_field must be a Strapi API id"),
    ],
)
def test_bad_settings_name_the_field_and_the_allowed_values(cls, values, message):
    with pytest.raises(ValueError, match=message):
        cls(**values)
