"""Maintainers' take-downs (why an entry was taken off the board, and when); workers' scorers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

A take-down sets ``withdrawn_at`` as a submitter's withdrawal does (every surface already
leaves withdrawn entries out); ``taken_down`` tells the two apart and says why, and
``moderated_at`` marks the board changed when an entry is taken down or put back. A worker
records its scorer version, so that newer workers re-score older results only once no worker
of an older scorer is alive.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as table:
        table.add_column(sa.Column("taken_down", sa.String(300)))
        table.add_column(sa.Column("moderated_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("workers") as table:
        table.add_column(sa.Column("scorer_version", sa.String(20)))


def downgrade() -> None:
    with op.batch_alter_table("workers") as table:
        table.drop_column("scorer_version")
    with op.batch_alter_table("submissions") as table:
        table.drop_column("moderated_at")
        table.drop_column("taken_down")
