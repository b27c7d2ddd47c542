"""Named locks in their own table, no longer fake rows of ``accounts``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Standings, re-scoring and the pathologists' rows each serialise on a named lock; they used to
lock an account row with a reserved name, which mixed locks into the users' table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FORMER_LOCK_ACCOUNTS = ("(standings)", "(re-scoring)", "(pathologists)")


def upgrade() -> None:
    op.create_table(
        "locks",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("taken_at", sa.DateTime(timezone=True)),
    )
    accounts = sa.table("accounts", sa.column("user"))
    op.execute(accounts.delete().where(accounts.c.user.in_(FORMER_LOCK_ACCOUNTS)))


def downgrade() -> None:
    op.drop_table("locks")
