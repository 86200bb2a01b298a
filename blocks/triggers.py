"""How a client's new-asset senders are configured: SNS topics and Strapi webhooks (fields of its profile),
and buckets shared by several clients (`SharedBucket`, a block of its own).

The bearer token (`ClientProfile.webhook_token`) authenticates S3/SQS/EventBridge forwarders,
CMS hooks and Strapi; SNS cannot send one, so an SNS delivery is authenticated by its signature
and its topic, which must be listed here.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import BaseModel, Field, SecretStr, field_validator

STRAPI_ENTRY_EVENTS = ("entry.create", "entry.update", "entry.publish")
# These withdraw what brandforge published for the entry's media (flows/withdraw.py).
STRAPI_WITHDRAW_EVENTS = ("entry.unpublish", "entry.delete")
STRAPI_EVENTS = ("entry.create", "entry.update", "entry.delete", "entry.publish", "entry.unpublish",
                 "media.create", "media.update", "media.delete")


class SnsSettings(BaseModel):
    """What a client accepts over SNS."""

    topic_arns: list[str] = Field(default_factory=list, description="SNS topics whose deliveries this client accepts "
                                  "(arn:aws:sns:<region>:<account>:<topic>); empty = none.")
    confirm_subscriptions: bool = Field(True, description="Confirm a SubscriptionConfirmation of a listed topic by "
                                        "fetching its SubscribeURL; off = log it and answer what to do.")

    @field_validator("topic_arns")
    @classmethod
    def _arns(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not a.startswith("arn:aws") or a.count(":") != 5]
        if bad:
            raise ValueError(f"topic_arns must be SNS topic ARNs such as arn:aws:sns:eu-west-1:123456789012:uploads (got {bad})")
        return v


class StrapiTrigger(BaseModel):
    """Which Strapi (v4 or v5) webhook events start a run for this client."""

    base_url: str = Field(description="The Strapi site's address; relative media URLs (/uploads/…) resolve against it.")
    collections: dict[str, str] = Field(
        default_factory=dict,
        description="Collection (model name such as 'product', or uid 'api::product.product') -> its media field; "
        "entry.create/update/publish of these start a run for the field's image(s); entry.unpublish/delete "
        "withdraw what brandforge published for them (the target entry unpublished or deleted).")
    media_uploads: bool = Field(False, description="media.create of an image starts a run too.")


class SharedBucket(Block):
    """An S3 bucket several clients upload to: its notifications (S3, SQS, SNS, EventBridge), posted to
    the gateway's `/buckets/<block name>`, are sorted by client from the object's key prefix or its tag."""

    _block_type_name = "Brandforge Shared Bucket"
    _block_type_slug = "brandforge-shared-bucket"
    _description = "A bucket shared by several clients: whose each new object is, by key prefix or object tag."

    bucket: str = Field(description="The bucket's name (each record of a notification must be of this bucket).")
    key_prefixes: dict[str, str] = Field(
        default_factory=dict, description="Key prefix -> client id, such as {\"acme/\": \"acme\"}; the longest match wins.")
    client_tag: str | None = Field(
        "brandforge-client", description="Object tag naming the client, read when no prefix matches (GetObjectTagging); "
        "null: prefixes only.")
    tag_clients: list[str] = Field(
        default_factory=list, description="Clients an object tag may name, besides those of key_prefixes; a tag naming "
        "any other client is refused.")
    credentials: AwsCredentials | None = Field(None, description="AWS credentials that may read the objects' tags.")
    webhook_token: SecretStr | None = Field(
        None, description="Bearer token an SQS/EventBridge forwarder sends (SNS deliveries are checked by signature).")
    sns: SnsSettings | None = Field(None, description="SNS topics whose signed deliveries are accepted for this bucket.")

    @field_validator("key_prefixes")
    @classmethod
    def _prefixes(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [p for p in v if not p or p.startswith("/")]
        if bad:
            raise ValueError(f"key_prefixes keys must be non-empty key prefixes such as 'acme/' (got {bad})")
        return v

    def allowed_clients(self) -> set[str]:
        return set(self.key_prefixes.values()) | set(self.tag_clients)

    def client_by_prefix(self, key: str) -> str | None:
        matches = [p for p in self.key_prefixes if key.startswith(p)]
        return self.key_prefixes[max(matches, key=len)] if matches else None

    def object_tags(self, key: str) -> dict[str, str]:
        """The object's tags (GetObjectTagging, current version)."""
        s3 = self.credentials.get_s3_client() if self.credentials else _default_s3_client()
        answer = s3.get_object_tagging(Bucket=self.bucket, Key=key)
        return {t["Key"]: t["Value"] for t in answer.get("TagSet", [])}


def _default_s3_client():
    import boto3

    return boto3.client("s3")
