"""Per-PBX revisions of the lists, bumped by the writes themselves.

A cached `/record` or `/transcription` page (storage/calls.py) is served again only while
its PBX's revision is the one it was rendered under. The revision lives in the database
and is bumped in the same transaction as the write, so whichever process wrote (another
`serve` worker, the CLI, a transcription worker) the next read sees the new revision
exactly when it can see the new rows: a reader's single statement reads both from one
snapshot. An in-process counter would miss every other process.

Transcriptions change in place (a re-run replaces the text and summary), so a count or a
largest id would not do here, unlike CDR rows (storage/page_cache.py).
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudpbx.storage.tables import pbx

ListName = Literal["recording", "transcription"]

_COLUMNS = {
    "recording": pbx.c.recording_revision,
    "transcription": pbx.c.transcription_revision,
}


async def bump(conn: AsyncConnection, name: ListName, pbx_id: int) -> None:
    """Mark `name`'s rows of the PBX changed; call inside the writing transaction, after
    the write (every writer takes the PBX row's lock last, so none waits on another in
    a different order)."""
    column = _COLUMNS[name]
    await conn.execute(update(pbx).where(pbx.c.id == pbx_id).values({column: column + 1}))
