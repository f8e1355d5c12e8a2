"""Recording downloads against the real server: streamed, resumed with Range, checked."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from cloudpbx.client import AsyncClient, Client, NotFound
from tests.conftest import Tenants
from tests.live import LiveServer
from tests.test_client_helpers import FAST, CuttingTransport, add_recording, at, audio

Live = tuple[LiveServer, Tenants]
UID = "1772539200.7"
SIZE = 300_000


@pytest.fixture
async def recorded(live: Live) -> tuple[LiveServer, Tenants, bytes]:
    server, tenants = live
    data = audio(SIZE)
    await add_recording(server, tenants.a_name, UID, data, at("2026-03-05"))
    return server, tenants, data


async def test_download_to_path_with_progress(
    recorded: tuple[LiveServer, Tenants, bytes], tmp_path: Path
) -> None:
    server, tenants, data = recorded
    target = tmp_path / "call.wav"
    seen: list[tuple[int, int | None]] = []

    def run() -> None:
        with Client(server.url, tenants.a_key) as client:
            result = client.download_recording(
                UID, target, progress=lambda done, total: seen.append((done, total))
            )
        assert result.path == target and result.size == SIZE and result.resumed_from == 0
        assert result.content_type.startswith("audio/wav")

    await asyncio.to_thread(run)
    assert target.read_bytes() == data and not (tmp_path / "call.wav.part").exists()
    assert seen[0] == (0, SIZE) and seen[-1] == (SIZE, SIZE)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


async def test_download_to_folder_and_file_object(
    recorded: tuple[LiveServer, Tenants, bytes], tmp_path: Path
) -> None:
    server, tenants, data = recorded
    buffer = io.BytesIO(b"header:")
    buffer.seek(0, io.SEEK_END)  # written from the file's current position
    async with AsyncClient(server.url, tenants.a_key) as client:
        saved = await client.download_recording(UID, tmp_path)
        into = await client.download_recording(UID, buffer)
    assert saved.path == tmp_path / f"{UID}.wav" and saved.path.read_bytes() == data
    assert into.path is None and buffer.getvalue() == b"header:" + data


async def test_resume_from_an_interrupted_earlier_run(
    recorded: tuple[LiveServer, Tenants, bytes], tmp_path: Path
) -> None:
    server, tenants, data = recorded
    target = tmp_path / "call.wav"
    (tmp_path / "call.wav.part").write_bytes(data[:120_000])  # what a killed run left
    seen: list[int] = []
    async with AsyncClient(server.url, tenants.a_key) as client:
        result = await client.download_recording(
            UID, target, progress=lambda done, total: seen.append(done)
        )
    assert result.resumed_from == 120_000 and result.size == SIZE
    assert seen[0] == 120_000  # only the rest came over the wire
    assert target.read_bytes() == data and not (tmp_path / "call.wav.part").exists()
    # a complete .part (the rename was all that was missing) costs one 416 answer
    (tmp_path / "again.wav.part").write_bytes(data)
    async with AsyncClient(server.url, tenants.a_key) as client:
        again = await client.download_recording(UID, tmp_path / "again.wav")
    assert again.resumed_from == SIZE and (tmp_path / "again.wav").read_bytes() == data
    # resume=False starts over, and a .part longer than the file is replaced
    (tmp_path / "long.wav.part").write_bytes(data + b"junk")
    async with AsyncClient(server.url, tenants.a_key) as client:
        fresh = await client.download_recording(UID, tmp_path / "long.wav")
    assert fresh.resumed_from == 0 and (tmp_path / "long.wav").read_bytes() == data


async def test_transfer_cut_midway_resumes_with_range(
    recorded: tuple[LiveServer, Tenants, bytes], tmp_path: Path
) -> None:
    server, tenants, data = recorded
    transport = CuttingTransport(limit=100_000)

    def run() -> None:
        with Client(server.url, tenants.a_key, transport=transport, retry=FAST) as client:
            result = client.download_recording(UID, tmp_path / "cut.wav")
        assert result.size == SIZE

    await asyncio.to_thread(run)
    assert (tmp_path / "cut.wav").read_bytes() == data
    first, second = transport.requests
    assert "range" not in first.headers
    assert second.headers["range"] == "bytes=100000-"
    assert second.headers["if-range"].startswith('"')  # the ETag of the first answer


async def test_download_errors(recorded: tuple[LiveServer, Tenants, bytes], tmp_path: Path) -> None:
    server, tenants, _ = recorded
    async with AsyncClient(server.url, tenants.a_key) as client:
        with pytest.raises(NotFound) as caught:
            await client.download_recording("1772539200.404", tmp_path / "x.wav")
    assert caught.value.code == "unknown_recording"
    assert not (tmp_path / "x.wav").exists()
    async with AsyncClient(server.url, tenants.b_key) as other:
        with pytest.raises(NotFound):  # another PBX's call is not there at all
            await other.download_recording(UID, tmp_path / "y.wav")
