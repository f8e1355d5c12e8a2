"""Every Python example of docs/client.md runs, as written, against a real server."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from cloudpbx.domain import events as domain
from cloudpbx.domain.states import DeviceState
from tests.conftest import Tenants
from tests.live import LiveServer
from tests.test_client_helpers import add_cdrs, add_recording, add_transcription, at, cdr_record

DOC = Path(__file__).resolve().parent.parent / "docs" / "client.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_the_page_has_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
async def test_example_runs(live: tuple[LiveServer, Tenants], tmp_path: Path, index: int) -> None:
    server, tenants = live
    pbx = tenants.a_name
    await add_cdrs(server, pbx, [cdr_record(f"1772539200.{n}", at("2026-03-03")) for n in (1, 2)])
    await add_recording(server, pbx, "1772539200.1", b"RIFF" + bytes(100), at("2026-03-03"))
    await add_transcription(server, pbx, "1772539200.1", at("2026-03-03"), "Treść", "Skrót")
    tenant = await server.runtime.tenants.require(pbx)
    await server.runtime.hub.publish(
        tenant, [domain.Subscriber(f"{pbx}-10{n}", DeviceState.IDLE) for n in range(6)]
    )
    code = EXAMPLES[index].replace("http://127.0.0.1:8080", server.url)
    code = code.replace("MyExampleKey1", tenants.a_key)
    env = {
        **os.environ,
        "CLOUDPBX_URL": server.url,
        "CLOUDPBX_KEY": tenants.a_key,
        "CLOUDPBX_PBX": pbx,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert out, "every example prints something"
    for promised in re.findall(r"print\(.*\)  # (\[.*\])", code):
        assert promised in out.decode(), "the output the comment shows"
