"""The published output's key beside the generation key.

The generation key now hashes only what decides the provider's pixels; what a
target deduplicates on (generation + post-processing) is the output key. Rows
written before have none (their generation key was the output's identity).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column("output_key", sa.String(64)))
    op.create_index("ix_ledger_output_key", "ledger", ["output_key"])


def downgrade() -> None:
    op.drop_index("ix_ledger_output_key", table_name="ledger")
    op.drop_column("ledger", "output_key")
