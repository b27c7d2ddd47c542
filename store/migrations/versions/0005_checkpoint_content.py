"""A checkpoint's content digest, so that another zip of the same files is the same submission.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

``submissions.sha256`` is the uploaded file's; a checkpoint zipped again (another folder
level, another compression, other timestamps) has another. ``content_sha256`` digests its
files' names and bytes (``models.archive.CheckpointFiles.verify``); unique, so two users'
racing copies meet the same refusal as identical files. Rows written before this revision have
none and are matched by their file's hash only (the shipped model's gets it at the next seed).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as table:
        table.add_column(sa.Column("content_sha256", sa.String(64)))
        table.create_index("ix_submissions_content_sha256", ["content_sha256"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("submissions") as table:
        table.drop_index("ix_submissions_content_sha256")
        table.drop_column("content_sha256")
