"""S3Target and S3 source handling against moto's S3 server over HTTP (boto3 / prefect-aws)."""

from __future__ import annotations

import asyncio

import pytest
from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters

from brandforge.blocks.targets.s3 import S3Target
from brandforge.models import PublishError
from brandforge.tasks.archive import TAG_KEY, handle_s3_source


def run(coro):
    return asyncio.run(coro)


def test_publish_sets_key_layout_headers_and_metadata(s3_bucket_block, publish_item):
    target = S3Target(bucket=s3_bucket_block)
    receipt = run(target.publish(publish_item))

    key = f"demo/jpeg/{publish_item.source_key[:16]}-{publish_item.generation_key[:12]}.jpg"
    assert receipt.remote_ids["key"] == key and receipt.url == f"s3://{s3_bucket_block.bucket_name}/{key}"
    client = s3_bucket_block.credentials.get_s3_client()
    head = client.head_object(Bucket=s3_bucket_block.bucket_name, Key=key)
    assert head["ContentType"] == "image/jpeg"
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    assert head["Metadata"]["generation-key"] == publish_item.generation_key
    assert head["Metadata"]["source-key"] == publish_item.source_key
    assert head["Metadata"]["recipe"] == "watercolour"
    body = client.get_object(Bucket=s3_bucket_block.bucket_name, Key=key)["Body"].read()
    assert body == open(publish_item.image_path, "rb").read()


def test_rerun_does_not_upload_again(s3_bucket_block, publish_item):
    target = S3Target(bucket=s3_bucket_block, public_base_url="https://cdn.example.invalid/img/")
    first = run(target.publish(publish_item))
    again = run(target.publish(publish_item))
    assert again.already_existed and again.url == first.url
    assert first.url.startswith("https://cdn.example.invalid/img/demo/jpeg/")
    assert run(target.find_existing(publish_item)).remote_ids["etag"] == first.remote_ids["etag"]
    listed = s3_bucket_block.credentials.get_s3_client().list_objects_v2(Bucket=s3_bucket_block.bucket_name)
    assert listed["KeyCount"] == 1


def test_bucket_folder_and_custom_layout(s3_bucket_block, publish_item):
    bucket = s3_bucket_block.model_copy(update={"bucket_folder": "published"})
    target = S3Target(bucket=bucket, key_layout="{client}/{recipe}/{name}-{generation_key:.8}.{ext}")
    receipt = run(target.publish(publish_item))
    assert receipt.remote_ids["key"] == f"published/demo/watercolour/red-mug-{publish_item.generation_key[:8]}.jpg"


def test_key_layout_is_validated():
    with pytest.raises(ValueError, match=r"unknown slots \['colour'\]; allowed"):
        S3Target(bucket=S3Bucket(bucket_name="b"), key_layout="{client}/{colour}")
    with pytest.raises(ValueError, match="must contain"):
        S3Target(bucket=S3Bucket(bucket_name="b"), key_layout="{client}/latest.jpg")


def test_missing_bucket_is_not_retryable(moto_s3, s3_bucket_block, publish_item):
    bucket = s3_bucket_block.model_copy(update={"bucket_name": "no-such-bucket-here"})
    with pytest.raises(PublishError) as failed:
        run(S3Target(bucket=bucket).publish(publish_item))
    assert not failed.value.retryable and "NoSuchBucket" in failed.value.reason


def test_unreachable_endpoint_is_retryable(publish_item):
    from tests.conftest import free_port

    creds = AwsCredentials(
        aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=f"http://127.0.0.1:{free_port()}", config={"retries": {"max_attempts": 1}, "connect_timeout": 2}),
    )
    with pytest.raises(PublishError) as failed:
        run(S3Target(bucket=S3Bucket(bucket_name="b", credentials=creds)).publish(publish_item))
    assert failed.value.retryable


def _put_source(bucket: S3Bucket, key: str) -> str:
    client = bucket.credentials.get_s3_client()
    client.put_object(Bucket=bucket.bucket_name, Key=key, Body=b"source bytes", Metadata={"shot": "1"}, Tagging="team=studio")
    return f"s3://{bucket.bucket_name}/{key}"


def test_s3_source_move_copies_then_deletes_and_is_idempotent(s3_bucket_block):
    uri = _put_source(s3_bucket_block, "incoming/red mug.jpg")
    client = s3_bucket_block.credentials.get_s3_client()
    name = s3_bucket_block.bucket_name

    assert handle_s3_source(uri, s3_bucket_block, "move", "archive/", "k" * 64) == f"moved to s3://{name}/archive/incoming/red mug.jpg"
    assert client.list_objects_v2(Bucket=name, Prefix="incoming/")["KeyCount"] == 0
    moved = client.head_object(Bucket=name, Key="archive/incoming/red mug.jpg")
    assert moved["Metadata"] == {"shot": "1"}
    assert client.get_object_tagging(Bucket=name, Key="archive/incoming/red mug.jpg")["TagSet"] == [{"Key": "team", "Value": "studio"}]
    # A rerun after a crash past the delete finishes quietly.
    assert handle_s3_source(uri, s3_bucket_block, "move", "archive/", "k" * 64).startswith("already moved")


def test_s3_source_tag_keeps_existing_tags(s3_bucket_block):
    uri = _put_source(s3_bucket_block, "incoming/cup.jpg")
    handle_s3_source(uri, s3_bucket_block, "tag", "archive/", "a" * 64)
    tags = s3_bucket_block.credentials.get_s3_client().get_object_tagging(Bucket=s3_bucket_block.bucket_name, Key="incoming/cup.jpg")
    assert {t["Key"]: t["Value"] for t in tags["TagSet"]} == {"team": "studio", TAG_KEY: "a" * 64}
