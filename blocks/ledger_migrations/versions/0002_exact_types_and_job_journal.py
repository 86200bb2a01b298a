"""Types that hold every value, publish receipts scoped by target, and the provider job journal.

- ids and seeds become 64-bit (seeds run to 2**32 - 1; PostgreSQL's integer stops at 2**31 - 1);
- cost_usd becomes exact: NUMERIC(18, 6) on PostgreSQL, integer micro-dollars on SQLite;
- target_key: which target instance a row was published to (receipts are reused only for it);
- provider_jobs: every paid job, on record from the moment its price is reserved.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from brandforge.blocks.ledger_schema import USD, BigId, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # REAL dollars → integer micro-dollars, the representation USD uses on SQLite.
        op.execute("UPDATE ledger SET cost_usd = CAST(ROUND(cost_usd * 1000000) AS INTEGER)")
        with op.batch_alter_table("ledger", recreate="always") as batch:
            batch.alter_column("cost_usd", type_=USD(), existing_nullable=False)
            batch.alter_column("seed", type_=sa.BigInteger())
            batch.add_column(sa.Column("target_key", sa.String(64)))
    else:
        op.alter_column("ledger", "id", type_=sa.BigInteger(), existing_nullable=False)
        if bind.dialect.name == "postgresql":
            op.execute("ALTER SEQUENCE IF EXISTS ledger_id_seq AS bigint")
        op.alter_column("ledger", "seed", type_=sa.BigInteger())
        op.alter_column("ledger", "cost_usd", type_=sa.Numeric(18, 6), existing_nullable=False,
                        postgresql_using="round(cost_usd::numeric, 6)")
        op.add_column("ledger", sa.Column("target_key", sa.String(64)))
    op.create_table(
        "provider_jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("client", sa.String(64), nullable=False, index=True),
        sa.Column("run_key", sa.String(64), index=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(256)),
        sa.Column("job_id", sa.String(256)),
        sa.Column("request_key", sa.String(64), index=True),
        sa.Column("generation_key", sa.String(64), index=True),
        sa.Column("source_uri", sa.Text),
        sa.Column("cost_usd", USD(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("handle", sa.JSON),
        sa.Column("reason", sa.Text),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("provider", "job_id", name="uq_provider_jobs_provider_job_id"),
    )


def downgrade() -> None:
    op.drop_table("provider_jobs")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("target_key")
