"""Alembic's entry point: runs the migrations on the connection ``store.engine`` hands over.

From the command line (writing a new revision), ``MITOSIS_DATABASE_URL`` names the database.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from settings import Settings
from store.schema import Base


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters a table by copying it
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    with create_engine(Settings.from_env().database_url).begin() as own:
        run(own)
