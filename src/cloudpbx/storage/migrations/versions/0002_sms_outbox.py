"""sms outbox: gateway, submission state, retries and polling (docs/sms.md)

Revision ID: 0002_sms
Revises: 0001
Create Date: 2026-12-02 10:00:00

Rows written before this revision were handed to their gateway in the request that
stored them (the simulator), so they start as `accepted` with nothing due.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_sms"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gateway", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("outbox", sa.String(length=16), server_default="accepted", nullable=False)
        )
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("due_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_sms_due_at", ["due_at"], unique=False)
        batch_op.create_index("ix_sms_pbx_gateway_id", ["pbx_id", "gateway_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sms", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_pbx_gateway_id")
        batch_op.drop_index("ix_sms_due_at")
        batch_op.drop_column("last_error")
        batch_op.drop_column("due_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("outbox")
        batch_op.drop_column("gateway")
