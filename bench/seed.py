"""Databases for the benchmarks.

The CDR database (1,000,000 rows by default) is built once and cached under
`.bench-data/`, keyed by its parameters and by the schema's migration files, so reruns
start at once. Rows go in through the sync `sqlite3` module in big `executemany`
batches, straight into the schema the project's own migrations created.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson

from bench.common import DATA_DIR

ZONE = "Europe/Warsaw"
CDR_PBX = "BenchCdr"
CDR_KEY = "bench-cdr-key-0000000001"
WS_PBX = "BenchWs"
WS_KEY = "bench-ws-key-00000000001"
CHANNEL_PBX = "BenchCh{}"
CHANNEL_KEY = "bench-ch-key-{}-000000"
FIRST_DAY = date(2024, 11, 1)  # 100 days from here are all CET: no DST change inside
MEASURED_DAY_INDEX = 70
SEED = 20_241_101
BATCH = 50_000

_MIGRATIONS = Path(__file__).resolve().parent.parent / "src/cloudpbx/storage/migrations/versions"


def schema_tag() -> str:
    """A short hash of the migration files and of this seeder: a change to either makes a
    new cache file."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(_MIGRATIONS.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def measured_day(total: int, day_rows: int) -> date:
    days = max(1, total // day_rows)
    return FIRST_DAY + timedelta(days=min(MEASURED_DAY_INDEX, days - 1))


async def _create_schema(path: Path, pbx_name: str, key: str) -> None:
    """Migrate an empty SQLite file and add one PBX with a known API key."""
    from cloudpbx.storage import migrate
    from cloudpbx.storage.database import create_engine
    from cloudpbx.storage.tenants import TenantStore

    engine = create_engine(f"sqlite:///{path}")
    try:
        await migrate.upgrade(engine)
        tenants = TenantStore(engine)
        await tenants.create(pbx_name, ZONE)
        await tenants.create_key(pbx_name, "bench", value=key)
    finally:
        await engine.dispose()


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _day_rows(
    rng: random.Random, day: date, count: int, zone: ZoneInfo, seq_start: int
) -> list[tuple[object, ...]]:
    base_local = datetime.combine(day, dtime(), zone)
    end_local = datetime.combine(day + timedelta(days=1), dtime(), zone)
    if base_local.utcoffset() != end_local.utcoffset():
        raise ValueError(f"{day} has a DST change; pick days without one")
    base_utc = base_local.astimezone(UTC).replace(tzinfo=None)
    base_naive = datetime.combine(day, dtime())
    epoch0 = int(base_local.timestamp())
    step = 86_400 / count
    rows: list[tuple[object, ...]] = []
    dispositions = ("ANSWERED",) * 7 + ("NO ANSWER", "NO ANSWER", "BUSY", "FAILED")
    zones = ("", "lokalne", "komorkowe", "miedzynarodowe")
    for i in range(count):
        second = int(i * step) + rng.randrange(max(1, int(step)))
        seq = seq_start + i
        src = str(100 + rng.randrange(60))
        outgoing = rng.random() < 0.6
        dst = str(rng.randrange(500_000_000, 899_999_999) if outgoing else 100 + rng.randrange(60))
        disposition = rng.choice(dispositions)
        duration = rng.randrange(1, 900)
        billsec = rng.randrange(0, duration) if disposition == "ANSWERED" else 0
        delta = timedelta(seconds=second)
        cost = rng.randrange(0, 500) if outgoing and billsec else None
        shown: dict[str, object] = {
            "calldate": (base_naive + delta).strftime("%Y-%m-%d %H:%M:%S"),
            "clid": f'"Uzytkownik {src}" <{src}>',
            "src": src,
            "dst": dst,
            "channel": f"SIP/{CDR_PBX}-{src}-{seq:08x}",
            "dstchannel": (
                f"SIP/trunk-{seq + 1:08x}" if outgoing else f"SIP/{CDR_PBX}-{dst}-{seq + 1:08x}"
            ),
            "lastapp": "Dial" if rng.random() < 0.8 else "Queue",
            "duration": duration,
            "billsec": billsec,
            "disposition": disposition,
            "uniqueid": f"{epoch0 + second}.{seq}",
            "cost": "" if cost is None else str(cost),
            "zone": rng.choice(zones) if outgoing else "",
        }
        values = list(shown.values())
        values[11] = cost  # the column holds grosze as an integer, NULL when not rated
        started = (base_utc + delta).strftime("%Y-%m-%d %H:%M:%S.000000")
        # `rendered` as the application writes it (storage/calls.py, cdr_row_values).
        rows.append((1, started, *values, orjson.dumps(shown).decode()))
    return rows


_INSERT = (
    "INSERT INTO cdr (pbx_id, started_at, calldate, clid, src, dst, channel, dstchannel, "
    "lastapp, duration, billsec, disposition, uniqueid, cost, zone, rendered) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
LIST_ROWS = 50
"""Transcriptions on the measured day: the small list of the bench (`/transcription`)."""
_TRANSCRIPTIONS = (
    "INSERT INTO transcription (pbx_id, uniqueid, started_at, calldate, src, dst, content, "
    "summary, finished_at) SELECT pbx_id, uniqueid, started_at, calldate, src, dst, "
    "'Dzień dobry, w czym mogę pomóc?', 'Klient pyta o fakturę.', started_at "
    "FROM cdr WHERE calldate >= ? ORDER BY id LIMIT ?"
)


def cdr_database(total: int = 1_000_000, day_rows: int = 10_000, log: bool = True) -> Path:
    """The cached CDR database: `total` rows over total/day_rows days, one PBX, and
    LIST_ROWS transcriptions on the measured day."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"cdr-{schema_tag()}-{total}-{day_rows}.sqlite"
    if path.exists():
        return path
    for stale in DATA_DIR.glob(f"cdr-*-{total}-{day_rows}.sqlite"):
        _remove_db(stale)  # built for an older schema: ~250 MB each, not kept
    started = time.monotonic()
    tmp = path.with_suffix(".tmp")
    _remove_db(tmp)
    asyncio.run(_create_schema(tmp, CDR_PBX, CDR_KEY))
    rng = random.Random(SEED)
    zone = ZoneInfo(ZONE)
    conn = sqlite3.connect(tmp)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-200000")
        (pbx_id,) = conn.execute("SELECT id FROM pbx WHERE name = ?", (CDR_PBX,)).fetchone()
        assert pbx_id == 1, pbx_id
        days = max(1, total // day_rows)
        pending: list[tuple[object, ...]] = []
        written = 0
        for index in range(days):
            count = day_rows if index < days - 1 else total - day_rows * (days - 1)
            pending.extend(_day_rows(rng, FIRST_DAY + timedelta(days=index), count, zone, written))
            written += count
            if len(pending) >= BATCH or index == days - 1:
                with conn:
                    conn.executemany(_INSERT, pending)
                pending = []
        with conn:
            conn.execute(_TRANSCRIPTIONS, (measured_day(total, day_rows).isoformat(), LIST_ROWS))
        (rows,) = conn.execute("SELECT count(*) FROM cdr").fetchone()
        if rows != total:
            raise RuntimeError(f"seeded {rows} rows, wanted {total}")
    finally:
        conn.close()
    tmp.rename(path)
    if log:
        print(f"  seeded {total:,} CDR rows in {time.monotonic() - started:.1f}s -> {path.name}")
    return path


async def ws_database(name: str) -> Path:
    """A fresh (empty) database with the WebSocket PBX and its key."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"{name}.sqlite"
    _remove_db(path)
    await _create_schema(path, WS_PBX, WS_KEY)
    return path


def _only_row(conn: sqlite3.Connection, table: str) -> dict[str, object]:
    cursor = conn.execute(f"SELECT * FROM {table}")
    (row,) = cursor.fetchall()
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def channel_pbx(n: int | str) -> str:
    """The name of PBX number `n` of the many-channel database."""
    return CHANNEL_PBX.format(n)


def channel_key(n: int | str) -> str:
    """The API key of PBX number `n` of the many-channel database."""
    return CHANNEL_KEY.format(n)


async def channels_database(name: str, count: int) -> Path:
    """A fresh database with the WebSocket PBX and `count` more PBXes (BenchCh0, ...), each
    with its own key: many small channels. Rows go in through `sqlite3` in one batch,
    copied from one PBX the project's own TenantStore created."""
    from cloudpbx.storage.tenants import hash_key, key_prefix

    path = await ws_database(name)
    conn = sqlite3.connect(path)
    try:
        pbx_row = _only_row(conn, "pbx")
        key_row = _only_row(conn, "api_key")
        pbx_columns = [c for c in pbx_row if c not in ("id", "name")]
        key_columns = [c for c in key_row if c not in ("id", "pbx_id", "key_hash", "prefix")]
        first = int(str(pbx_row["id"])) + 1
        with conn:
            conn.executemany(
                f"INSERT INTO pbx (id, name, {', '.join(pbx_columns)}) "
                f"VALUES (?, ?{', ?' * len(pbx_columns)})",
                [
                    (first + n, channel_pbx(n), *(pbx_row[c] for c in pbx_columns))
                    for n in range(count)
                ],
            )
            conn.executemany(
                f"INSERT INTO api_key (pbx_id, key_hash, prefix, {', '.join(key_columns)}) "
                f"VALUES (?, ?, ?{', ?' * len(key_columns)})",
                [
                    (
                        first + n,
                        hash_key(channel_key(n)),
                        key_prefix(channel_key(n)),
                        *(key_row[c] for c in key_columns),
                    )
                    for n in range(count)
                ],
            )
    finally:
        conn.close()
    return path
