"""TenantStore on SQLite and PostgreSQL: PBXes, API keys, event id blocks."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select

from cloudpbx.domain.errors import BadRequest, Conflict, NotFound
from cloudpbx.domain.records import RecordingInfo, SmsMessage, TranscriptionRecord
from cloudpbx.domain.states import SmsStatus
from cloudpbx.ports.bus import WireMessage
from cloudpbx.storage.jobs import JobStore
from cloudpbx.storage.tables import api_key, event
from cloudpbx.storage.tenants import KEY_PREFIX, TenantStore, utcnow
from tests.test_storage_support import (
    Stores,
    at,
    cdr_record,
    dump_rows,
    open_stores,
    rows_of_pbx,
    unique_name,
)


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[Stores]:
    async with open_stores(database_url) as opened:
        yield opened


# -- PBXes ---------------------------------------------------------------------------------


async def test_create_get_list(stores: Stores) -> None:
    name = unique_name("Moja")
    other = unique_name("Inna")
    stores.created += [name, other]
    created = await stores.tenants.create(name)
    await stores.tenants.create(other, "America/New_York", sms_gateway="simulator")

    assert created.name == name
    assert created.zone == ZoneInfo("Europe/Warsaw")  # the documented default
    assert created.timezone == "Europe/Warsaw"
    assert created.sms_gateway is None
    assert await stores.tenants.get(name) == created
    assert await stores.tenants.require(name) == created

    fetched = await stores.tenants.require(other)
    assert fetched.timezone == "America/New_York" and fetched.sms_gateway == "simulator"

    listed = [t for t in await stores.tenants.list() if t.name in (name, other)]
    assert [t.name for t in listed] == sorted([name, other])
    assert await stores.tenants.count() >= 2


async def test_unknown_pbx(stores: Stores) -> None:
    assert await stores.tenants.get("NoSuchPbx_x") is None
    with pytest.raises(NotFound) as info:
        await stores.tenants.require("NoSuchPbx_x")
    assert info.value.code == "unknown_pbx"
    with pytest.raises(NotFound):
        await stores.tenants.remove("NoSuchPbx_x")
    with pytest.raises(NotFound):
        await stores.tenants.set_sms_gateway("NoSuchPbx_x", "simulator")


@pytest.mark.parametrize(
    "name",
    ["", "Moja Centrala", "Zażółć", "a/b", "a.b", "pbx\n", "x" * 65, "a;drop", "'q'", "[b]"],
)
async def test_create_rejects_bad_names(stores: Stores, name: str) -> None:
    with pytest.raises(BadRequest) as info:
        await stores.tenants.create(name)
    assert info.value.code == "invalid_pbx_name"
    assert info.value.status == 400


@pytest.mark.parametrize("name", ["a", "A_b-9", "x" * 64])
async def test_create_accepts_edge_names(stores: Stores, name: str) -> None:
    # Edge names are not made unique by a suffix: make them unique per engine run instead.
    if await stores.tenants.get(name) is not None:
        await stores.tenants.remove(name)
    stores.created.append(name)
    assert (await stores.tenants.create(name)).name == name


async def test_duplicate_name_is_conflict(stores: Stores) -> None:
    tenant = await stores.tenant()
    with pytest.raises(Conflict) as info:
        await stores.tenants.create(tenant.name, "UTC")
    assert info.value.code == "pbx_exists" and info.value.status == 409
    # The failed insert left the first PBX as it was.
    assert await stores.tenants.get(tenant.name) == tenant


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "", "Europe/Warsaw ", "../../etc/passwd", "/etc/localtime"]
)
async def test_create_rejects_bad_time_zone(stores: Stores, zone: str) -> None:
    name = unique_name()
    with pytest.raises(BadRequest) as info:
        await stores.tenants.create(name, zone)
    assert info.value.code == "invalid_timezone"
    assert await stores.tenants.get(name) is None


async def test_create_rejects_overlong_gateway(stores: Stores) -> None:
    # The column is String(32): PostgreSQL would fail with a raw DataError, SQLite would not.
    with pytest.raises(BadRequest):
        await stores.tenants.create(unique_name(), sms_gateway="g" * 33)


async def test_set_sms_gateway(stores: Stores) -> None:
    tenant = await stores.tenant()
    await stores.tenants.set_sms_gateway(tenant.name, "simulator")
    assert (await stores.tenants.require(tenant.name)).sms_gateway == "simulator"
    await stores.tenants.set_sms_gateway(tenant.name, None)
    assert (await stores.tenants.require(tenant.name)).sms_gateway is None


async def test_remove_cascades_to_everything_the_pbx_owns(stores: Stores) -> None:
    doomed = await stores.tenant("Doomed")
    kept = await stores.tenant("Kept")
    for tenant in (doomed, kept):
        await stores.tenants.create_key(tenant.name, "k")
        await stores.calls.add_cdrs(tenant, [cdr_record(at("2025-01-02 10:00:00"), "1.1")])
        await stores.calls.add_recording(
            tenant,
            RecordingInfo("1.1", at("2025-01-02 10:00:00"), "101", "102", "wav", "1.1.wav", 44),
        )
        await stores.calls.add_transcription(
            tenant,
            TranscriptionRecord("1.1", at("2025-01-02 10:00:00"), "101", "102", "tekst", "s"),
        )
        await stores.sms.add(
            tenant,
            SmsMessage(
                f"{tenant.id}000",
                "48500100200",
                "hi",
                False,
                SmsStatus.QUEUE,
                1,
                16,
                at("2025-01-02 10:00:00"),
            ),
        )
        await stores.sms.apply_status(tenant, f"{tenant.id}000", SmsStatus.SENT)
        await stores.events.append([(tenant.id, WireMessage(1, '{"id":1}'))])
        await stores.events.merge()  # the log's rows are nobody's: its chunks are the PBX's
        async with stores.engine.begin() as conn:  # a row as the archive (or older hubs) wrote
            await conn.execute(
                insert(event).values(pbx_id=tenant.id, id=2, data='{"id":2}', created_at=utcnow())
            )
        await JobStore(stores.engine).enqueue(tenant.id, "1.1")
    doomed_key = await stores.tenants.create_key(doomed.name, "second")

    before = await rows_of_pbx(stores.engine, doomed.id)
    assert all(count >= 1 for count in before.values()), before
    sms_ids = {r["id"] for r in (await dump_rows(stores.engine))["sms"] if r["pbx_id"] == doomed.id}
    kept_before = await rows_of_pbx(stores.engine, kept.id)

    await stores.tenants.remove(doomed.name)

    after = await rows_of_pbx(stores.engine, doomed.id, sms_ids)
    assert after == dict.fromkeys(before, 0)
    assert await rows_of_pbx(stores.engine, kept.id) == kept_before
    assert await stores.tenants.get(doomed.name) is None
    assert await stores.tenants.authenticate(doomed_key) is None
    with pytest.raises(NotFound):
        await stores.tenants.remove(doomed.name)


# -- keys ----------------------------------------------------------------------------------


async def test_create_key_is_returned_once_and_stored_only_as_sha256(stores: Stores) -> None:
    tenant = await stores.tenant()
    key = await stores.tenants.create_key(tenant.name, "wallboard")
    second = await stores.tenants.create_key(tenant.name, "crm")
    assert key != second
    assert key.startswith(KEY_PREFIX) and len(key) >= len(KEY_PREFIX) + 40

    async with stores.engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    select(api_key).where(api_key.c.pbx_id == tenant.id).order_by(api_key.c.id)
                )
            )
            .mappings()
            .all()
        )
    assert [bytes(r["key_hash"]) for r in rows] == [
        hashlib.sha256(k.encode()).digest() for k in (key, second)
    ]
    assert [r["label"] for r in rows] == ["wallboard", "crm"]

    # The raw key is nowhere in the database: no column of any row holds it (as text,
    # as bytes, as hex), nor any piece of it beyond the short prefix `key list` shows.
    dump = await dump_rows(stores.engine)
    for secret in (key, second):
        random_part = secret[len(KEY_PREFIX) :]
        needles = [secret, random_part[:12], secret.encode().hex()]
        for table, table_rows in dump.items():
            for row in table_rows:
                for column, value in row.items():
                    text = value.hex() if isinstance(value, bytes) else str(value)
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    for needle in needles:
                        assert needle not in text, (table, column)
                        assert needle.encode() not in raw, (table, column)


async def test_key_list_shows_only_a_short_prefix(stores: Stores) -> None:
    tenant = await stores.tenant()
    key = await stores.tenants.create_key(tenant.name, "wallboard")
    imported = await stores.tenants.create_key(tenant.name, "legacy", value="Legacy-Key-12")
    infos = await stores.tenants.list_keys(tenant.name)
    assert [(i.pbx, i.label) for i in infos] == [
        (tenant.name, "wallboard"),
        (tenant.name, "legacy"),
    ]
    generated, legacy = infos
    assert key.startswith(generated.prefix) and len(generated.prefix) == 9
    # Never more than a quarter of the key: 3 of a 13-character imported key.
    assert imported.startswith(legacy.prefix) and len(legacy.prefix) == 3
    assert generated.revoked_at is None and generated.created_at is not None
    everything = await stores.tenants.list_keys()
    assert {i.id for i in infos} <= {i.id for i in everything}
    with pytest.raises(NotFound):
        await stores.tenants.list_keys("NoSuchPbx_x")


async def test_import_existing_key(stores: Stores) -> None:
    tenant = await stores.tenant()
    other = await stores.tenant()
    value = f"legacy-{unique_name()}"
    assert await stores.tenants.create_key(tenant.name, "legacy", value=value) == value
    assert await stores.tenants.authenticate(value) == tenant
    # The same key cannot belong to two PBXes (nor twice to one).
    for target in (tenant, other):
        with pytest.raises(Conflict) as info:
            await stores.tenants.create_key(target.name, value=value)
        assert info.value.code == "key_exists"
    assert await stores.tenants.authenticate(value) == tenant


@pytest.mark.parametrize(
    "value",
    ["short-key01", "has space inside", "tab\tinside-key", "zażółć-gęślą-jaźń", "x" * 257, ""],
)
async def test_import_rejects_bad_key_values(stores: Stores, value: str) -> None:
    tenant = await stores.tenant()
    with pytest.raises(BadRequest) as info:
        await stores.tenants.create_key(tenant.name, value=value)
    assert info.value.code == "invalid_key"
    assert await stores.tenants.list_keys(tenant.name) == []


async def test_create_key_errors(stores: Stores) -> None:
    with pytest.raises(NotFound):
        await stores.tenants.create_key("NoSuchPbx_x")
    tenant = await stores.tenant()
    with pytest.raises(BadRequest) as info:
        await stores.tenants.create_key(tenant.name, label="l" * 129)
    assert info.value.code == "invalid_label"
    assert await stores.tenants.create_key(tenant.name, label="l" * 128)


async def test_authenticate_live_revoked_unknown(stores: Stores) -> None:
    tenant = await stores.tenant()
    other = await stores.tenant()
    live = await stores.tenants.create_key(tenant.name)
    revoked = await stores.tenants.create_key(tenant.name)
    other_key = await stores.tenants.create_key(other.name)
    _, revoked_info = await stores.tenants.list_keys(tenant.name)  # oldest first
    await stores.tenants.revoke_key(revoked_info.id)

    assert await stores.tenants.authenticate(live) == tenant
    assert await stores.tenants.authenticate(other_key) == other
    assert await stores.tenants.authenticate(revoked) is None
    for unknown in ["", live[:-1], live + "x", live.upper(), "cpbx_unknown", "\ud800bad"]:
        assert await stores.tenants.authenticate(unknown) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_key_cache_revocation_elsewhere_takes_effect_after_the_ttl(stores: Stores) -> None:
    """Two stores on one database, as two processes: what one revokes, the other refuses
    once its cached entry is `key_cache_ttl` old, and not before (docs/operations.md)."""
    clock = FakeClock()
    server = TenantStore(stores.engine, key_cache_ttl=2.0, clock=clock)
    tenant = await stores.tenant()
    key = await stores.tenants.create_key(tenant.name)
    (info,) = await stores.tenants.list_keys(tenant.name)
    assert await server.authenticate(key) == tenant

    await stores.tenants.revoke_key(info.id)  # the CLI, another process
    clock.now += 1.9
    assert await server.authenticate(key) == tenant  # still within the TTL: cached
    clock.now += 0.1
    assert await server.authenticate(key) is None
    assert await TenantStore(stores.engine).authenticate(key) is None  # no cache: at once


async def test_key_cache_changes_through_the_same_store_take_effect_at_once(
    stores: Stores,
) -> None:
    server = TenantStore(stores.engine, key_cache_ttl=60.0, clock=FakeClock())
    tenant = await stores.tenant()
    key = await server.create_key(tenant.name)
    assert await server.authenticate(key) == tenant
    await server.set_sms_gateway(tenant.name, "simulator")
    cached = await server.authenticate(key)
    assert cached is not None and cached.sms_gateway == "simulator"
    (info,) = await server.list_keys(tenant.name)
    await server.revoke_key(info.id)
    assert await server.authenticate(key) is None

    doomed = await stores.tenant()
    doomed_key = await server.create_key(doomed.name)
    assert await server.authenticate(doomed_key) == doomed
    await server.remove(doomed.name)
    assert await server.authenticate(doomed_key) is None


async def test_key_cache_keeps_only_keys_that_authenticated(stores: Stores) -> None:
    """Guesses never enter the cache, and a cached key's near misses are still refused."""
    clock = FakeClock()
    server = TenantStore(stores.engine, key_cache_ttl=60.0, clock=clock)
    tenant = await stores.tenant()
    key = await server.create_key(tenant.name)
    for guess in ["cpbx_unknown-key-000000", key[:-1], key + "x"]:
        assert await server.authenticate(guess) is None
    assert len(server._live_keys) == 0
    assert await server.authenticate(key) == tenant
    assert len(server._live_keys) == 1
    for guess in [key[:-1], key + "x", key.upper()]:
        assert await server.authenticate(guess) is None


async def test_revoke_key(stores: Stores) -> None:
    tenant = await stores.tenant()
    key = await stores.tenants.create_key(tenant.name, "one")
    (info,) = await stores.tenants.list_keys(tenant.name)
    await stores.tenants.revoke_key(info.id)
    (revoked,) = await stores.tenants.list_keys(tenant.name)
    assert revoked.revoked_at is not None and revoked.revoked_at >= revoked.created_at
    assert await stores.tenants.authenticate(key) is None
    with pytest.raises(NotFound) as error:
        await stores.tenants.revoke_key(info.id)  # already revoked
    assert error.value.code == "unknown_key"
    with pytest.raises(NotFound):
        await stores.tenants.revoke_key(2_000_000_000)


# -- event id blocks -----------------------------------------------------------------------


async def test_reserve_event_ids_blocks_strictly_increase(stores: Stores) -> None:
    tenant = await stores.tenant()
    other = await stores.tenant()
    assert await stores.tenants.reserve_event_ids(tenant.id, 1000) == 1
    assert await stores.tenants.reserve_event_ids(tenant.id, 1000) == 1001
    assert await stores.tenants.reserve_event_ids(tenant.id, 5) == 2001
    assert await stores.tenants.reserve_event_ids(tenant.id, 1) == 2006
    # Each PBX has its own sequence.
    assert await stores.tenants.reserve_event_ids(other.id, 10) == 1
    with pytest.raises(ValueError):
        await stores.tenants.reserve_event_ids(tenant.id, 0)
    with pytest.raises(NotFound):
        await stores.tenants.reserve_event_ids(2_000_000_000, 10)


async def test_concurrent_reservations_never_overlap(stores: Stores) -> None:
    tenant = await stores.tenant()
    sizes = [1, 7, 10, 100, 3] * 6

    async def reserve(block: int) -> range:
        first = await stores.tenants.reserve_event_ids(tenant.id, block)
        return range(first, first + block)

    blocks = await asyncio.gather(*(reserve(size) for size in sizes))
    ids = sorted(i for block in blocks for i in block)
    assert ids == list(range(1, sum(sizes) + 1))  # no overlap, no gap
    assert await stores.tenants.reserve_event_ids(tenant.id, 1) == sum(sizes) + 1


async def test_release_event_ids(stores: Stores) -> None:
    tenant = await stores.tenant()
    first = await stores.tenants.reserve_event_ids(tenant.id, 1000)
    assert first == 1
    # A clean shutdown after using ids 1..10 gives 11..1000 back: no gap after restart.
    await stores.tenants.release_event_ids(tenant.id, reserved_up_to=1000, last_used=10)
    assert await stores.tenants.reserve_event_ids(tenant.id, 1000) == 11

    # A stale release (somebody reserved since) changes nothing: ids are never reused.
    assert await stores.tenants.reserve_event_ids(tenant.id, 1000) == 1011
    await stores.tenants.release_event_ids(tenant.id, reserved_up_to=1010, last_used=20)
    assert await stores.tenants.reserve_event_ids(tenant.id, 1) == 2011
