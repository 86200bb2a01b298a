"""Alembic environment of the brandforge ledger.

Run by `blocks.ledger.migrate` with the connection it opened (never from a URL
in a config file, so no password is written anywhere). The version table has
its own name, so a ledger sharing a database with other Alembic users (Prefect's
own server database, an application's) never mixes revisions with theirs.
"""

from alembic import context

VERSION_TABLE = "brandforge_ledger_version"

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table=VERSION_TABLE, render_as_batch=True, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
