"""transcription jobs: the durable queue of the transcription workers

Revision ID: 0003_jobs
Revises: 0002_sms
Create Date: 2026-12-02 12:00:00

Recordings stored before this revision get no job (their calls keep whatever
transcription they have); `cloudpbx transcribe UID` queues one by hand.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_jobs"
down_revision: str | None = "0002_sms"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transcription_job",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("pbx_id", sa.Integer(), nullable=False),
        sa.Column("uniqueid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rerun", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", sa.DateTime(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("worker", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["pbx_id"],
            ["pbx.id"],
            name=op.f("fk_transcription_job_pbx_id_pbx"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcription_job")),
        sa.UniqueConstraint(
            "pbx_id", "uniqueid", name=op.f("uq_transcription_job_pbx_id_uniqueid")
        ),
    )
    with op.batch_alter_table("transcription_job", schema=None) as batch_op:
        batch_op.create_index(
            "ix_transcription_job_status_available", ["status", "available_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("transcription_job", schema=None) as batch_op:
        batch_op.drop_index("ix_transcription_job_status_available")
    op.drop_table("transcription_job")
