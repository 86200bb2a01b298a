"""A republished asset replaces its earlier publish: the earlier row becomes `replaced` and points at the newer one.

`replaced_by` holds the newer row's id; the index finds an asset's current publish at a
target (client, source URI, target key). The state itself needs no change: it is a string.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column("replaced_by", sa.BigInteger()))
    op.create_index("ix_ledger_asset_target", "ledger", ["client", "source_uri", "target_key"])


def downgrade() -> None:
    op.drop_index("ix_ledger_asset_target", table_name="ledger")
    op.drop_column("ledger", "replaced_by")
