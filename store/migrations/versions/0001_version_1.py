"""Version 1: submissions with ten metadata columns, jobs, results.

Revision ID: 0001
Revises:
Create Date: 2026-06-01

A database written before the project used Alembic is stamped with this revision and upgraded.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TEXT_FIELDS = {
    "model_name": 200,
    "team": 200,
    "method_type": 32,
    "backbone": 200,
    "pretraining": 200,
    "training_data": 300,
}


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(13), nullable=False),
        sa.Column("user", sa.String(100), nullable=False, index=True),
        *[sa.Column(name, sa.String(n), nullable=False) for name, n in TEXT_FIELDS.items()],
        sa.Column("uses_midog", sa.Boolean, nullable=False),
        sa.Column("paper_url", sa.String(500), nullable=False),
        sa.Column("code_url", sa.String(500), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "submission_id", sa.Integer, sa.ForeignKey("submissions.id"), nullable=False, index=True
        ),
        sa.Column("status", sa.String(9), nullable=False, index=True),
        sa.Column("hidden", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("claim_token", sa.String(32), nullable=False),
        sa.Column("worker", sa.String(100), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    metrics = ["ba_low", "ba_high", "ba_std", "sensitivity", "specificity", "auroc"]
    metrics += ["auroc_low", "auroc_high", "average_precision", "brier", "ece"]
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), index=True),
        sa.Column(
            "submission_id", sa.Integer, sa.ForeignKey("submissions.id"), nullable=False, index=True
        ),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("current", sa.Boolean, nullable=False, index=True),
        sa.Column("n", sa.Integer),
        sa.Column("n_atypical", sa.Integer),
        sa.Column("ba", sa.Float, nullable=False),
        *[sa.Column(name, sa.Float) for name in metrics],
        *[sa.Column(name, sa.Integer) for name in ("tp", "fn", "tn", "fp")],
        sa.Column("decisions", sa.LargeBinary),
        sa.Column("scorer_version", sa.String(16), nullable=False),
        sa.Column("label_set_hash", sa.String(64), nullable=False),
        sa.Column("versions", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "split"),
    )


def downgrade() -> None:
    for table in ("results", "jobs", "submissions"):
        op.drop_table(table)
