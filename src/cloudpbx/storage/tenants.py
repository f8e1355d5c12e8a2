"""PBXes (tenants) and their API keys.

Keys are 256-bit random tokens; only their SHA-256 is stored. Looking a key up by its hash
is an index probe whose timing does not depend on how much of a guess matches, and the
final comparison uses hmac.compare_digest. Keys that authenticated are remembered for
`key_cache_ttl` seconds (storage/key_cache.py: why, and what that means for revocation).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.domain.errors import BadRequest, Conflict, NotFound
from cloudpbx.storage.key_cache import KeyCache
from cloudpbx.storage.reads import Read, SqliteReaders
from cloudpbx.storage.tables import api_key, pbx

PBX_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
KEY_PREFIX = "cpbx_"
# An imported key must travel in an HTTP header (`Authorization: Bearer KEY`) and in a
# query string: visible ASCII only, no spaces. The upper bound only stops absurd input.
IMPORTED_KEY = re.compile(r"[\x21-\x7e]{12,256}")
# `key list` shows the first characters of a key so that an operator can tell keys apart.
# Never more than a quarter of the key: for a generated key that is `cpbx_` + 4 random
# characters, for a 12-character imported key only 3, so the listing never gives away
# enough of a key to make guessing the rest practical.
SHOWN_PREFIX = 9
MAX_LABEL = 128  # api_key.label is String(128): PostgreSQL would refuse a longer one
MAX_GATEWAY = 32  # pbx.sms_gateway is String(32)


@dataclass(frozen=True, slots=True)
class Tenant:
    """A PBX as the API sees it: every store call takes its id."""

    id: int
    name: str
    zone: ZoneInfo
    sms_gateway: str | None

    @property
    def timezone(self) -> str:
        return self.zone.key


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: int
    pbx: str
    label: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> bytes:
    # surrogatepass: a malformed key from a request must fail authentication, not crash it.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_prefix(key: str) -> str:
    """The part of a key that `key list` may show (see SHOWN_PREFIX)."""
    return key[: min(SHOWN_PREFIX, len(key) // 4)]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def validate_pbx_name(name: str) -> str:
    if not PBX_NAME.fullmatch(name):
        raise BadRequest(
            f"PBX name must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-', got {name!r}",
            code="invalid_pbx_name",
        )
    return name


def validate_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"unknown time zone {name!r}", code="invalid_timezone") from None


class TenantStore:
    """Create, find and remove PBXes; issue, check and revoke their keys."""

    def __init__(
        self,
        engine: AsyncEngine,
        key_cache_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        readers: SqliteReaders | None = None,
    ) -> None:
        """`key_cache_ttl`: seconds a key that authenticated is trusted without a database
        read, i.e. how long a revocation made elsewhere takes to reach this store.
        `readers`: SQLite connections for the key lookup (storage/reads.py)."""
        self._engine = engine
        self._readers = readers
        self._live_keys: KeyCache[tuple[bytes, Tenant]] = KeyCache(key_cache_ttl, clock)
        # Every authenticated request reads this: built once, one trip on SQLite.
        self._key_lookup = Read(
            select(api_key.c.key_hash, pbx.c.id, pbx.c.name, pbx.c.timezone, pbx.c.sms_gateway)
            .join(pbx, pbx.c.id == api_key.c.pbx_id)
            .where(api_key.c.key_hash == bindparam("digest"), api_key.c.revoked_at.is_(None)),
            engine.dialect,
        )

    async def create(
        self, name: str, timezone: str = "Europe/Warsaw", sms_gateway: str | None = None
    ) -> Tenant:
        validate_pbx_name(name)
        zone = validate_timezone(timezone)
        if sms_gateway is not None and not 1 <= len(sms_gateway) <= MAX_GATEWAY:
            raise BadRequest(
                f"an SMS gateway name must be 1-{MAX_GATEWAY} characters",
                code="invalid_sms_gateway",
            )
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    pbx.insert().values(
                        name=name,
                        timezone=zone.key,
                        sms_gateway=sms_gateway,
                        event_id_reserved=0,
                        created_at=utcnow(),
                    )
                )
        except IntegrityError:
            raise Conflict(f"PBX {name!r} already exists", code="pbx_exists") from None
        (pbx_id,) = result.inserted_primary_key or (0,)
        return Tenant(int(pbx_id), name, zone, sms_gateway)

    async def get(self, name: str) -> Tenant | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(pbx).where(pbx.c.name == name))).first()
        if row is None:
            return None
        return Tenant(row.id, row.name, ZoneInfo(row.timezone), row.sms_gateway)

    async def require(self, name: str) -> Tenant:
        tenant = await self.get(name)
        if tenant is None:
            raise NotFound(f"no PBX named {name!r}", code="unknown_pbx")
        return tenant

    async def list(self) -> list[Tenant]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(pbx).order_by(pbx.c.name))).all()
        return [Tenant(r.id, r.name, ZoneInfo(r.timezone), r.sms_gateway) for r in rows]

    async def set_sms_gateway(self, name: str, gateway: str | None) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(pbx).where(pbx.c.name == name).values(sms_gateway=gateway)
            )
        self._live_keys.clear()  # cached tenants carry the gateway
        if result.rowcount == 0:
            raise NotFound(f"no PBX named {name!r}", code="unknown_pbx")

    async def remove(self, name: str) -> None:
        """Delete a PBX with everything it owns (keys, calls, recordings rows, events)."""
        tenant = await self.require(name)
        async with self._engine.begin() as conn:
            await conn.execute(delete(pbx).where(pbx.c.id == tenant.id))
        self._live_keys.clear()

    async def create_key(self, name: str, label: str = "", value: str | None = None) -> str:
        """Issue a key for PBX `name`; returns the key itself, which is never stored.

        `value` imports an existing key (e.g. one clients already hold from another
        provider); it must be 12-256 visible ASCII characters (it travels in HTTP headers
        and query strings).
        """
        tenant = await self.require(name)
        if len(label) > MAX_LABEL:
            raise BadRequest(
                f"a key label must be at most {MAX_LABEL} characters", code="invalid_label"
            )
        key = value if value is not None else new_key()
        if not IMPORTED_KEY.fullmatch(key):
            raise BadRequest(
                "an API key must be 12-256 visible ASCII characters without spaces",
                code="invalid_key",
            )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    api_key.insert().values(
                        pbx_id=tenant.id,
                        key_hash=hash_key(key),
                        label=label,
                        prefix=key_prefix(key),
                        created_at=utcnow(),
                    )
                )
        except IntegrityError:
            raise Conflict("that key is already in use", code="key_exists") from None
        return key

    async def authenticate(self, key: str) -> Tenant | None:
        """The PBX a live key belongs to, or None (unknown or revoked)."""
        digest = hash_key(key)
        cached = self._live_keys.get(digest)
        if cached is not None:
            stored, tenant = cached
            return tenant if hmac.compare_digest(stored, digest) else None
        generation = self._live_keys.generation
        if self._readers is not None:
            row = await self._readers.first(self._key_lookup, {"digest": digest})
        else:
            async with self._engine.connect() as conn:
                row = await self._key_lookup.first(conn, {"digest": digest})
        if row is None:
            return None
        key_hash, pbx_id, name, timezone, sms_gateway = row
        stored = bytes(key_hash)
        if not hmac.compare_digest(stored, digest):
            return None
        tenant = Tenant(pbx_id, name, ZoneInfo(timezone), sms_gateway)
        self._live_keys.put(stored, (stored, tenant), generation)
        return tenant

    async def list_keys(self, name: str | None = None) -> builtins.list[ApiKeyInfo]:
        """Keys of PBX `name` (all PBXes when None), oldest first; unknown PBX: NotFound."""
        if name is not None:
            await self.require(name)
        query = select(api_key, pbx.c.name.label("pbx_name")).join(
            pbx, pbx.c.id == api_key.c.pbx_id
        )
        if name is not None:
            query = query.where(pbx.c.name == name)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(api_key.c.id))).all()
        return [
            ApiKeyInfo(r.id, r.pbx_name, r.label, r.prefix, r.created_at, r.revoked_at)
            for r in rows
        ]

    async def revoke_key(self, key_id: int) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(api_key)
                .where(api_key.c.id == key_id, api_key.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        self._live_keys.clear()
        if result.rowcount == 0:
            raise NotFound(f"no active key with id {key_id}", code="unknown_key")

    async def reserve_event_ids(self, pbx_id: int, block: int) -> int:
        """Reserve the next `block` event ids; returns the first id of the block.

        Ids in a reserved block that were never used are skipped after a restart: ids stay
        strictly increasing and are never reused, at the price of a gap.
        """
        if block < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        # One UPDATE ... RETURNING: the row lock (PostgreSQL) or the write lock (SQLite)
        # makes concurrent reservations queue up, so blocks never overlap.
        async with self._engine.begin() as conn:
            reserved = (
                await conn.execute(
                    update(pbx)
                    .where(pbx.c.id == pbx_id)
                    .values(event_id_reserved=pbx.c.event_id_reserved + block)
                    .returning(pbx.c.event_id_reserved)
                )
            ).scalar_one_or_none()
        if reserved is None:
            raise NotFound(f"no PBX with id {pbx_id}", code="unknown_pbx")
        return int(reserved) - block + 1

    async def release_event_ids(self, pbx_id: int, reserved_up_to: int, last_used: int) -> None:
        """Give back the unused tail of a reserved block (at a clean shutdown)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(pbx)
                .where(pbx.c.id == pbx_id, pbx.c.event_id_reserved == reserved_up_to)
                .values(event_id_reserved=last_used)
            )

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(pbx))).scalar_one())
