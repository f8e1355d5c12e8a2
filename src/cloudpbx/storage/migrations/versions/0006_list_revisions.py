"""pbx.recording_revision, pbx.transcription_revision: bumped with every write to a PBX's
recording or transcription rows (for the /record and /transcription page cache and ETags)

Revision ID: 0006_list_revisions
Revises: 0005_leases
Create Date: 2026-12-05 20:00:00

Existing PBXes start at 0, as does a new one: no process holds a cached list page across
this migration (pages live in a server's memory, and a server runs migrations at start).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_list_revisions"
down_revision: str | None = "0005_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("recording_revision", "transcription_revision")


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("pbx", sa.Column(name, sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    for name in reversed(_COLUMNS):
        op.drop_column("pbx", name)
