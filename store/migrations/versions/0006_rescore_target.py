"""The label set and scorer version an automatic re-scoring was queued for.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

A re-scoring that failed left its submission's results on the old labels (or the older
scorer's), so every worker that looked again queued it again: twice with two workers after a
label change, and every 30 s for an older scorer's results. A job now records the target it
was queued for, and a submission whose re-scoring for a target failed (since its current
results) is left to ``--rescore``. Jobs written before this revision have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("rescore_label_set", sa.String(64)))
        table.add_column(sa.Column("rescore_scorer", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.drop_column("rescore_scorer")
        table.drop_column("rescore_label_set")
