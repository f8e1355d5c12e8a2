"""A PostgreSQL server of one test's own (initdb + pg_ctl on a free port), for tests that
stop and restart the database: the shared server on 5432 is never touched.

Debian's binaries live in /usr/lib/postgresql/<version>/bin; PostgreSQL refuses to run as
root, so when the tests run as root the cluster belongs to the `postgres` OS user (as
scripts/postgres does for the shared server), in a folder of its own under /tmp.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tests.processes import free_port

START_WAIT_S = 30


def pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts)
    if not versions:
        raise AssertionError("no PostgreSQL binaries in /usr/lib/postgresql (scripts/postgres)")
    return versions[-1].parent


class PrivatePostgres:
    """One cluster: `stop()` and `start()` it at will; `url` is a trust-auth superuser DSN."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="cloudpbx-pg-"))
        self.data = self.folder / "data"
        self._owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._owner is not None:
            os.chown(self.folder, self._owner.pw_uid, self._owner.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        argv = [str(pg_bin() / program), *args]
        if self._owner is not None:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{program} failed: {done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-w", "-t", str(START_WAIT_S),
            "-l", str(self.folder / "server.log"), "-o", options,
        )  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: every session is ended at once, as in a real restart."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    def destroy(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        started = time.monotonic()
        await asyncio.to_thread(server.init)
        await asyncio.to_thread(server.start)
        print(f"private PostgreSQL on {server.port} up in {time.monotonic() - started:.1f} s")
        yield server
    finally:
        await asyncio.to_thread(server.destroy)
