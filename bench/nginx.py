"""nginx serving the `/cdr` bytes as a static file: the physical reference of the machine.

The Debian package (`apt-get install nginx`) when installed; otherwise the bench skips it
with a note. One worker process (cloudpbx runs in one), no access log, `sendfile`, and
`gzip_static` serving a precompressed `.gz` beside the file to clients that ask for gzip:
the cheapest way any server can answer these requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gzip
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from bench.common import DATA_DIR, HOST, LOG_DIR

PR_SET_PDEATHSIG = 1  # prctl(2)
FILE_NAME = "cdr.json"
CONFIG = """\
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {log} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    types {{ application/json json; }}
    server {{
        listen {host}:{port};
        root {root};
        location / {{ gzip_static on; }}
    }}
}}
"""


@dataclass
class Nginx:
    proc: asyncio.subprocess.Process
    port: int
    path: str

    def pids(self) -> list[int]:
        """The master and its worker (the worker does the serving)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            return [self.proc.pid, *(int(pid) for pid in children.read_text().split())]
        return [self.proc.pid]

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the orchestrator dies (nginx does not
    read stdin, so it cannot notice as the Python children do)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def start_nginx(body: bytes, gzip_level: int) -> Nginx | None:
    """nginx serving `body` (and its gzip at `gzip_level`) at /cdr.json; None if absent."""
    binary = nginx_binary()
    if binary is None:
        return None
    prefix = DATA_DIR / "nginx"
    root = prefix / "root"
    root.mkdir(parents=True, exist_ok=True)
    (root / FILE_NAME).write_bytes(body)
    (root / f"{FILE_NAME}.gz").write_bytes(gzip.compress(body, gzip_level, mtime=0))
    port = free_port()
    config = CONFIG.format(
        prefix=prefix, log=LOG_DIR / "nginx.log", host=HOST, port=port, root=root
    )
    return await launch(binary, prefix, config, port, f"/{FILE_NAME}", "nginx.log")


async def launch(
    binary: str, prefix: Path, config: str, port: int, probe: str, log_name: str
) -> Nginx:
    """Start nginx with `config` under `prefix`; return once `HEAD probe` answers 200
    and the worker exists (or raise, with nginx stopped)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    config_path = prefix / "nginx.conf"
    config_path.write_text(config)
    with (LOG_DIR / log_name).open("ab") as log:  # start-up warnings, beside its error log
        proc = await asyncio.create_subprocess_exec(
            binary,
            "-p",
            str(prefix),
            "-c",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=log,
            preexec_fn=_die_with_parent,
        )
    server = Nginx(proc, port, probe)
    for _ in range(200):  # up to 10 s
        if proc.returncode is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}; see {LOG_DIR}/{log_name}")
        with contextlib.suppress(OSError):
            # An answer, not just a connection: the master listens before its worker
            # exists, and the worker is the process whose CPU the bench measures.
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(f"HEAD {probe} HTTP/1.0\r\n\r\n".encode())
            status = await reader.readline()
            writer.close()
            if status.startswith(b"HTTP/1.1 200") and len(server.pids()) > 1:
                return server
        await asyncio.sleep(0.05)
    await server.stop()
    raise RuntimeError("nginx did not listen within 10 s")
