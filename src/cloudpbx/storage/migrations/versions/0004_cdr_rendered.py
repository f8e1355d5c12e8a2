"""cdr.rendered: each CDR row's `/cdr` JSON object, rendered when the row is written;
pbx.cdr_revision: bumped when a stored CDR row changes (for the /cdr page cache and ETags)

Revision ID: 0004_cdr_rendered
Revises: 0003_jobs
Create Date: 2026-12-05 15:00:00

Rows stored before this revision are rendered here, in SQL, to the same bytes the
application writes (compact JSON, fields in the document's order, `cost` a string):
SQLite's json_quote and PostgreSQL's to_json escape strings exactly as orjson does
(tests/test_cdr_rendered.py compares them). A 1,000,000-row table takes tens of seconds.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_cdr_rendered"
down_revision: str | None = "0003_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STRINGS = ("calldate", "clid", "src", "dst", "channel", "dstchannel", "lastapp")
_STRINGS_AFTER = ("disposition", "uniqueid")


def _rendered_sql(dialect: str) -> str:
    """The SQL expression of a row's JSON object, in the document's field order."""

    def quote(column: str) -> str:
        return f"json_quote({column})" if dialect == "sqlite" else f"to_json({column})::text"

    def number(column: str) -> str:
        return f"CAST({column} AS TEXT)"

    parts = [f"'\"{name}\":' || {quote(name)}" for name in _STRINGS]
    parts += [f"'\"{name}\":' || {number(name)}" for name in ("duration", "billsec")]
    parts += [f"'\"{name}\":' || {quote(name)}" for name in _STRINGS_AFTER]
    cost = "COALESCE(CAST(cost AS TEXT), '')"
    parts.append(f"'\"cost\":' || {quote(cost)}")
    parts.append(f"'\"zone\":' || {quote('zone')}")
    return "'{' || " + " || ',' || ".join(parts) + " || '}'"


def upgrade() -> None:
    op.add_column(
        "pbx", sa.Column("cdr_revision", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column("cdr", sa.Column("rendered", sa.Text(), server_default="", nullable=False))
    dialect = op.get_bind().dialect.name
    op.execute(f"UPDATE cdr SET rendered = {_rendered_sql(dialect)}")


def downgrade() -> None:
    # SQLite has ALTER TABLE DROP COLUMN since 3.35.
    op.drop_column("cdr", "rendered")
    op.drop_column("pbx", "cdr_revision")
