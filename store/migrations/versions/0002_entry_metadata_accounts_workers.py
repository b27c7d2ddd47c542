"""Version 2: metadata as JSON; accounts, secrets, workers, standings; release decisions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06

Brings every database written before Alembic to this schema: version 1, and the versions
between it and this one, which added some of these columns and tables already (each step
below is taken only when the database lacks it). Those versions added their columns as
optional and left them empty in older rows: such values get the column's default (a job's
lane from its submission's kind) and the column becomes required, as here.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_METADATA = (
    "model_name",
    "team",
    "method_type",
    "backbone",
    "pretraining",
    "training_data",
    "uses_midog",
    "paper_url",
    "code_url",
    "description",
)
NEW_COLUMNS = {
    "submissions": [
        sa.Column("parameters", sa.BigInteger),
        sa.Column("ms_per_crop", sa.Float),
        sa.Column("measured_on", sa.String(100)),
        sa.Column("hub_ref", sa.String(300), nullable=False, server_default=""),
        sa.Column("release", sa.String(16)),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True)),
    ],
    "jobs": [
        sa.Column("scope", sa.String(8)),
        sa.Column("lane", sa.String(8), nullable=False, server_default="files"),
        sa.Column("flops_per_crop", sa.Float, nullable=False, server_default="0"),
        sa.Column("estimated_s", sa.Float, nullable=False, server_default="0"),
        sa.Column("progress_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("progress_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("disclosure", sa.Text, nullable=False, server_default=""),
        sa.Column("charged_s", sa.Float, nullable=False, server_default="0"),
    ],
    "results": [
        sa.Column("curves", sa.JSON(none_as_null=True)),
        sa.Column("published", sa.JSON(none_as_null=True)),
    ],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    columns = {t: {c["name"] for c in inspector.get_columns(t)} for t in NEW_COLUMNS}
    optional = {
        t: {c["name"] for c in inspector.get_columns(t) if c["nullable"]} for t in NEW_COLUMNS
    }
    _fill_and_require(optional)
    if "meta" not in columns["submissions"]:
        _metadata_into_json(columns["submissions"])
    if "hidden" in columns["jobs"]:
        with op.batch_alter_table("jobs") as batch:
            batch.alter_column("hidden", new_column_name="counts_toward_quota")
    for table, new in NEW_COLUMNS.items():
        missing = [column for column in new if column.name not in columns[table]]
        if missing:
            with op.batch_alter_table(table) as batch:
                for column in missing:
                    batch.add_column(column)
    tables = set(inspector.get_table_names())
    if "accounts" not in tables:
        op.create_table(
            "accounts",
            sa.Column("user", sa.String(100), primary_key=True),
            sa.Column("touched_at", sa.DateTime(timezone=True)),
            sa.Column("ladder_bar", sa.Float),
        )
    elif "ladder_bar" not in {c["name"] for c in inspector.get_columns("accounts")}:
        op.add_column("accounts", sa.Column("ladder_bar", sa.Float))
    if "secrets" not in tables:
        op.create_table(
            "secrets",
            sa.Column("name", sa.String(50), primary_key=True),
            sa.Column("value", sa.String(128), nullable=False),
        )
    if "standings" not in tables:
        op.create_table(
            "standings",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("margin", sa.Float, nullable=False),
            sa.Column("submission_ids", sa.JSON, nullable=False),
            sa.Column("result_ids", sa.JSON, nullable=False),
            sa.Column("n_resamples", sa.Integer, nullable=False),
            sa.Column("label_set_hash", sa.String(64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "workers" not in tables:
        _create_workers()
    elif "gflops" not in {c["name"] for c in inspector.get_columns("workers")}:
        op.add_column("workers", sa.Column("gflops", sa.Float))


def _fill_and_require(optional: dict[str, set[str]]) -> None:
    """Columns an intermediate version added as optional: empty values filled, then required."""
    if "lane" in optional["jobs"]:
        op.execute(
            "UPDATE jobs SET lane = CASE WHEN (SELECT kind FROM submissions WHERE submissions.id "
            "= jobs.submission_id) = 'checkpoint' THEN 'models' ELSE 'files' END "
            "WHERE lane IS NULL"
        )
    if "meta" in optional["submissions"]:
        op.execute("""UPDATE submissions SET meta = '{"model_name": ""}' WHERE meta IS NULL""")
        with op.batch_alter_table("submissions") as batch:
            batch.alter_column("meta", existing_type=sa.JSON, nullable=False)
    for table, new in NEW_COLUMNS.items():
        required = [c for c in new if not c.nullable and c.name in optional[table]]
        for column in required:
            default = column.server_default.arg
            op.execute(
                sa.text(
                    f'UPDATE {table} SET "{column.name}" = :value WHERE "{column.name}" IS NULL'
                ).bindparams(value=default)
            )
        if required:
            with op.batch_alter_table(table) as batch:
                for column in required:
                    batch.alter_column(column.name, existing_type=column.type, nullable=False)


def _metadata_into_json(present: set[str]) -> None:
    """Version 1's ten metadata columns (and ``source``) become one JSON value, ``meta``."""
    old = [name for name in OLD_METADATA if name in present]
    op.add_column("submissions", sa.Column("meta", sa.JSON))
    connection = op.get_bind()
    quoted = ", ".join(f'"{name}"' for name in old)
    rows = connection.execute(sa.text(f"SELECT id, {quoted} FROM submissions")).mappings()
    for row in list(rows):
        meta = {name: row[name] for name in old if row[name] is not None}
        meta.setdefault("model_name", "")
        if "uses_midog" in meta:
            meta["uses_midog"] = bool(meta["uses_midog"])
        connection.execute(
            sa.text("UPDATE submissions SET meta = :meta WHERE id = :id"),
            {"meta": json.dumps(meta), "id": row["id"]},
        )
    with op.batch_alter_table("submissions") as batch:
        for name in [*old, *({"source"} & present)]:
            batch.drop_column(name)
        batch.alter_column("meta", existing_type=sa.JSON, nullable=False)


def _create_workers() -> None:
    op.create_table(
        "workers",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("host", sa.String(100), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("device", sa.String(100), nullable=False),
        sa.Column("threads", sa.Integer, nullable=False),
        sa.Column("lanes", sa.String(32), nullable=False),
        sa.Column("gflops", sa.Float),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError(
        "Version 2 cannot be taken back to version 1 without losing rows (jobs, accounts and "
        "decisions version 1 has no place for); restore a backup of the version-1 file instead."
    )
