"""Everything that decided a row's image, as values: the recipe snapshot (`brandforge replay`).

One JSON column (`models.RecipeSnapshot`): template name, version and rendered prompt, the
provider block's type, settings and wire parameters, the chain with its settings, encode
settings, palette, the logo's hash and location, target. Rows written before have none.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column("recipe_snapshot", sa.JSON))


def downgrade() -> None:
    op.drop_column("ledger", "recipe_snapshot")
