"""The schema, as SQLAlchemy Core tables. Alembic migrations (storage/migrations) create it.

Times: `started_at` columns are naive UTC (indexed, used for ranges and order);
`calldate` columns are the same instant rendered once, at write time, as the API's
`YYYY-MM-DD HH:MM:SS` in the PBX's zone, so list endpoints never convert per row.
A PBX's zone is fixed when it is created (docs/decisions.md).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# sqlite_autoincrement: ids are never reused after a delete (PostgreSQL's sequences never
# are), which the /cdr page cache relies on (storage/page_cache.py).
pbx = Table(
    "pbx",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("timezone", String(64), nullable=False),
    Column("sms_gateway", String(32), nullable=True),
    # Event ids are handed out from blocks reserved here, so ids never repeat after a crash.
    Column("event_id_reserved", BigInteger, nullable=False, server_default="0"),
    # Bumped whenever a stored CDR row changes (an SMS's cost arriving later): CDR rows are
    # otherwise only added, and the /cdr page cache and ETags rely on both (page_cache.py).
    Column("cdr_revision", BigInteger, nullable=False, server_default="0"),
    # Bumped in the same transaction as every write to the PBX's recording or
    # transcription rows (storage/revisions.py): the /record and /transcription page cache
    # and ETags check them, one primary-key read, whichever process wrote (migration 0006).
    Column("recording_revision", BigInteger, nullable=False, server_default="0"),
    Column("transcription_revision", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime, nullable=False),
    sqlite_autoincrement=True,
)

api_key = Table(
    "api_key",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx_id", Integer, ForeignKey("pbx.id", ondelete="CASCADE"), nullable=False),
    Column("key_hash", LargeBinary(32), nullable=False, unique=True),
    Column("label", String(128), nullable=False, server_default=""),
    Column("prefix", String(12), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
)

cdr = Table(
    "cdr",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("pbx_id", Integer, ForeignKey("pbx.id", ondelete="CASCADE"), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("calldate", String(19), nullable=False),
    Column("clid", String(160), nullable=False),
    Column("src", String(80), nullable=False),
    Column("dst", String(80), nullable=False),
    Column("channel", String(160), nullable=False),
    Column("dstchannel", String(160), nullable=False),
    Column("lastapp", String(80), nullable=False),
    Column("duration", Integer, nullable=False),
    Column("billsec", Integer, nullable=False),
    Column("disposition", String(16), nullable=False),
    Column("uniqueid", String(64), nullable=False),
    Column("cost", Integer, nullable=True),
    Column("zone", String(64), nullable=False, server_default=""),
    # The row as its `/cdr` JSON object, rendered once when the row is written (migration
    # 0004_cdr_rendered): a page is then these strings joined with commas. The default
    # exists only because SQLite cannot add a NOT NULL column without one; every writer
    # sets it (storage/calls.py, cdr_row_values).
    Column("rendered", Text, nullable=False, server_default=""),
    Index("ix_cdr_pbx_started", "pbx_id", "started_at"),
    Index("ix_cdr_pbx_uniqueid", "pbx_id", "uniqueid"),
    sqlite_autoincrement=True,
)

recording = Table(
    "recording",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("pbx_id", Integer, ForeignKey("pbx.id", ondelete="CASCADE"), nullable=False),
    Column("uniqueid", String(64), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("calldate", String(19), nullable=False),
    Column("src", String(80), nullable=False),
    Column("dst", String(80), nullable=False),
    Column("format", String(16), nullable=False),
    Column("path", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    UniqueConstraint("pbx_id", "uniqueid"),
    Index("ix_recording_pbx_started", "pbx_id", "started_at"),
)

transcription = Table(
    "transcription",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("pbx_id", Integer, ForeignKey("pbx.id", ondelete="CASCADE"), nullable=False),
    Column("uniqueid", String(64), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("calldate", String(19), nullable=False),
    Column("src", String(80), nullable=False),
    Column("dst", String(80), nullable=False),
    Column("content", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("finished_at", DateTime, nullable=False),
    UniqueConstraint("pbx_id", "uniqueid"),
    Index("ix_transcription_pbx_started", "pbx_id", "started_at"),
)

sms = Table(
    "sms",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("pbx_id", Integer, ForeignKey("pbx.id", ondelete="CASCADE"), nullable=False),
    Column("response_id", String(32), nullable=False, unique=True),
    Column("to", String(16), nullable=False),
    Column("body", Text, nullable=False),
    Column("test", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("parts", Integer, nullable=False),
    Column("cost", Integer, nullable=True),
    Column("gateway_id", String(64), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # The outbox (migration 0002_sms, docs/sms.md): the gateway the message goes through,
    # where it stands with it (pending, unsure, accepted, refused), how many submissions
    # were tried, when the dispatcher looks at it next (resubmit or poll; NULL: never),
    # and the last gateway error.
    Column("gateway", String(32), nullable=True),
    Column("outbox", String(16), nullable=False, server_default="accepted"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("due_at", DateTime, nullable=True),
    Column("last_error", String(255), nullable=True),
    Index("ix_sms_pbx_created", "pbx_id", "created_at"),
    Index("ix_sms_due_at", "due_at"),
    Index("ix_sms_pbx_gateway_id", "pbx_id", "gateway_id"),
)

sms_status_history = Table(
    "sms_status_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("sms_id", BigInteger, ForeignKey("sms.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("at", DateTime, nullable=False),
    Index("ix_sms_status_history_sms", "sms_id"),
)

event = Table(
    "event",
    metadata,
    Column("pbx_id", Integer, ForeignKey("pbx.id", ondelete="CASCADE"), primary_key=True),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("data", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

# The in-process event hub's store (storage/events.py): every group commit appends one
# `event_log` row holding all of its messages (append-only, so a commit writes a page or
# two whatever the number of PBXes); a merge every few seconds moves the log into
# `event_chunk`, one row per PBX per merge holding that PBX's messages in id order.
# `event` keeps per-message rows: the event engine's archive (storage/event_archive.py)
# and what the hub stored before chunks (still read and pruned).
event_log = Table(
    "event_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("data", Text, nullable=False),
)

event_chunk = Table(
    "event_chunk",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("pbx_id", Integer, ForeignKey("pbx.id", ondelete="CASCADE"), nullable=False),
    Column("first_id", BigInteger, nullable=False),
    Column("last_id", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
    Index("ix_event_chunk_pbx_last", "pbx_id", "last_id"),
)

# One row per recorded call that needs a transcription (docs/transcription.md): the durable
# queue of the transcription workers. `status`: queued → running → done | failed | skipped.
# A claim sets `claim` (a token of that attempt) and `locked_until` (the lease, extended by
# heartbeats); a running row whose lease ran out is claimed again by another worker.
transcription_job = Table(
    "transcription_job",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("pbx_id", Integer, ForeignKey("pbx.id", ondelete="CASCADE"), nullable=False),
    Column("uniqueid", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("rerun", Boolean, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("available_at", DateTime, nullable=False),
    Column("locked_until", DateTime, nullable=True),
    Column("claim", String(32), nullable=True),
    Column("worker", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=True),
    UniqueConstraint("pbx_id", "uniqueid"),
    Index("ix_transcription_job_status_available", "status", "available_at"),
)


# Leases (storage/leases.py): who runs a singleton job, such as the one AMI connector of an
# Asterisk server, across processes. Times are seconds since the epoch by the DATABASE's
# clock, so no process's clock decides who holds what; `token` grows by one on every new
# term and fences a holder whose term ended (docs/operations.md, "Leases").
lease = Table(
    "lease",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", Double, nullable=False),
)
