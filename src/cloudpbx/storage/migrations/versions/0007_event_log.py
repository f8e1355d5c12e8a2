"""event_log, event_chunk: the event hub's append-only log and its per-PBX chunks

Revision ID: 0007_event_log
Revises: 0006_list_revisions
Create Date: 2026-12-05 20:40:00

The hub's messages stored before this revision stay in `event`, which the hub still reads
(and prunes) when it loads a PBX's history; the event engine's archive keeps using it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_event_log"
down_revision: str | None = "0006_list_revisions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _seq() -> sa.Column[int]:
    return sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "event_log",
        _seq(),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event_log")),
    )
    op.create_table(
        "event_chunk",
        _seq(),
        sa.Column("pbx_id", sa.Integer(), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pbx_id"], ["pbx.id"], name=op.f("fk_event_chunk_pbx_id_pbx"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event_chunk")),
    )
    op.create_index("ix_event_chunk_pbx_last", "event_chunk", ["pbx_id", "last_id"])


def downgrade() -> None:
    op.drop_index("ix_event_chunk_pbx_last", table_name="event_chunk")
    op.drop_table("event_chunk")
    op.drop_table("event_log")
