"""The ledger as brandforge 0.1 created it (before migrations existed).

A ledger created by that version is stamped at this revision, then upgraded.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("client", sa.String(64), nullable=False, index=True),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("source_key", sa.String(64), index=True),
        sa.Column("recipe", sa.String(128)),
        sa.Column("recipe_key", sa.String(64)),
        sa.Column("generation_key", sa.String(64), index=True),
        sa.Column("provider", sa.String(64)),
        sa.Column("model", sa.String(256)),
        sa.Column("job_ids", sa.JSON),
        sa.Column("output_uris", sa.JSON),
        sa.Column("params", sa.JSON),
        sa.Column("seed", sa.Integer),
        sa.Column("scores", sa.JSON),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("timings", sa.JSON),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.Text),
        sa.Column("target", sa.String(64)),
        sa.Column("remote_ids", sa.JSON),
        sa.Column("published_url", sa.Text),
        sa.Column("phash", sa.String(64)),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("ledger")
