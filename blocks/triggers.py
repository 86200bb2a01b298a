"""How a client's new-asset senders are configured: SNS topics and Strapi webhooks (fields of its profile).

The bearer token (`ClientProfile.webhook_token`) authenticates S3/SQS/EventBridge forwarders,
CMS hooks and Strapi; SNS cannot send one, so an SNS delivery is authenticated by its signature
and its topic, which must be listed here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

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
