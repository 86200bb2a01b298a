"""The ledger's tables and the column types that hold every value on every backend.

Two tables in one database:

- `ledger`: one row per asset × recipe attempt — the audit record and the
  idempotency index (what `Ledger.record` appends);
- `provider_jobs`: the job journal — one row per paid provider job, written
  *before* the job is submitted (a reservation of its price) and updated the
  moment the provider accepts it. Spend and budgets read this table, so money
  is on record whatever happens to the asset afterwards, in every process.

Types are chosen so that a value the pipeline produces is stored exactly on
SQLite and PostgreSQL alike: 64-bit ids and seeds (seeds run to 2³²−1),
exact decimal dollars, timestamps that come back in UTC with their zone.
The schema changes only through the Alembic revisions in `ledger_migrations/`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from brandforge.models import MICRO_USD as MICRO
from brandforge.models import exact_usd

class USD(TypeDecorator):
    """Exact dollars: NUMERIC(18, 6) where the database has a decimal type; on SQLite, whose NUMERIC
    is a binary float, integer micro-dollars (so SUM stays exact there too)."""

    impl = Numeric(18, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, 6, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        amount = exact_usd(value)
        return int(amount / MICRO) if dialect.name == "sqlite" else amount

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return exact_usd(Decimal(int(value)) * MICRO)
        return exact_usd(Decimal(value))


class UTCDateTime(TypeDecorator):
    """`timestamp with time zone`; values are stored in UTC and always come back aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# SQLite only autoincrements an INTEGER PRIMARY KEY (which is 64-bit there anyway).
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

ledger_table = Table(
    "ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("client", String(64), nullable=False, index=True),
    Column("source_uri", Text, nullable=False),
    Column("source_key", String(64), index=True),
    Column("recipe", String(128)),
    Column("recipe_key", String(64)),
    Column("generation_key", String(64), index=True),
    Column("output_key", String(64), index=True),
    Column("provider", String(64)),
    Column("model", String(256)),
    Column("job_ids", JSON),
    Column("output_uris", JSON),
    Column("params", JSON),
    Column("seed", BigInteger),
    Column("scores", JSON),
    Column("cost_usd", USD, nullable=False, default=Decimal(0)),
    Column("timings", JSON),
    Column("state", String(16), nullable=False, index=True),
    Column("reason", Text),
    Column("target", String(64)),
    Column("target_key", String(64)),
    Column("remote_ids", JSON),
    Column("published_url", Text),
    Column("phash", String(64)),
    Column("flow_run_id", String(64)),
    Column("created_at", UTCDateTime, nullable=False, index=True),
    Column("recipe_snapshot", JSON),
    # A `replaced` row's successor: the row of the asset's later publish at the same target.
    Column("replaced_by", BigInteger),
    # The current publish of an asset at a target is looked up by these.
    Index("ix_ledger_asset_target", "client", "source_uri", "target_key"),
)

# States of a journalled job. `reserved`: its price is held, the provider has not answered yet (a
# worker that dies here may have been billed, so the reservation keeps counting); `submitted`: the
# provider accepted it (job id known, resumable); `succeeded` / `failed`: the provider finished it;
# `released`: the provider refused it, so nothing was spent.
JOB_STATES = ("reserved", "submitted", "succeeded", "failed", "released")
SPENDING_STATES = ("reserved", "submitted", "succeeded", "failed")

provider_jobs_table = Table(
    "provider_jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("client", String(64), nullable=False, index=True),
    Column("run_key", String(64), index=True),
    Column("provider", String(64), nullable=False),
    Column("model", String(256)),
    Column("job_id", String(256)),
    Column("request_key", String(64), index=True),
    Column("generation_key", String(64), index=True),
    Column("source_uri", Text),
    Column("cost_usd", USD, nullable=False, default=Decimal(0)),
    Column("state", String(16), nullable=False, index=True),
    Column("handle", JSON),
    Column("reason", Text),
    Column("flow_run_id", String(64)),
    Column("created_at", UTCDateTime, nullable=False, index=True),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("provider", "job_id", name="uq_provider_jobs_provider_job_id"),
)
