"""Running programs inside the lab chroot, each in its own private mount namespace.

Every program of the lab runs as `unshare --mount --propagation private` + `chroot`, with
/proc, /dev and a private /etc/resolv.conf mounted *inside* that namespace only: the host
never sees a lab mount, and the mounts vanish with the last process of the namespace, so
nothing is left mounted when the lab is down, even after a crash or a SIGKILL.

Long-running programs (asterisk, baresip) are started through `setsid -f`: they are session
leaders, detached from whoever started them, and their pid is written by the shell that then
`exec`s into them, so the pid file names the program itself. They are stopped by that pid
(and their session), never by name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudpbx.lab.errors import LabProcessError

CHROOT_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "TERM": "dumb",
}


def _namespace_script(root: Path, resolv_conf: Path | None, pidfile: Path | None) -> str:
    """The `sh -c` body: mounts inside the new namespace, then `exec chroot ROOT "$@"`."""
    lines = _mount_lines(root, resolv_conf, pidfile)
    lines.append(f'exec chroot {_quote(str(root))} "$@"')
    return "\n".join(lines)


def _mount_lines(root: Path, resolv_conf: Path | None, pidfile: Path | None) -> list[str]:
    """Write the shell's pid (the session leader's), mount /proc, /dev, resolv.conf."""
    r = _quote(str(root))
    lines = ["set -e"]
    if pidfile is not None:
        lines.append(f"echo $$ > {_quote(str(pidfile))}")
    lines += [
        f"mount -t proc proc {r}/proc",
        f"mount --rbind /dev {r}/dev",
    ]
    if resolv_conf is not None:
        lines.append(f"mount --bind {_quote(str(resolv_conf))} {r}/etc/resolv.conf")
    return lines


def _supervisor_script(
    root: Path, resolv_conf: Path | None, leader_pidfile: Path, pidfile: Path, restarts: Path
) -> str:
    """Like `_namespace_script`, but the shell stays as the program's supervisor.

    It starts the program, writes its pid to `pidfile`, and when the program ends without
    being asked to (a crash, a stray signal) appends `<UTC time> <exit status>` to
    `restarts`, says so on stderr (the program's log) and starts it again a second later.
    SIGTERM to the supervisor (or to the session) stops both for good; SIGKILL to the
    session kills both without a restart (a phone that vanishes without a word).
    """
    mounts = _mount_lines(root, resolv_conf, leader_pidfile)
    r, pid, log = _quote(str(root)), _quote(str(pidfile)), _quote(str(restarts))
    return "\n".join(
        [
            *mounts,
            "set +e",
            "child= stopping=",
            'trap \'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null\' TERM INT HUP',
            "while :; do",
            f'  chroot {r} "$@" &',
            "  child=$!",
            f"  echo $child > {pid}",
            '  while :; do wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null || break; done',
            '  [ -n "$stopping" ] && exit 0',
            f'  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $rc" >> {log}',
            '  echo "cloudpbx lab: $1 exited with status $rc; restarting it" >&2',
            "  sleep 1",
            '  [ -n "$stopping" ] && exit 0',
            "done",
        ]
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _prepare(root: Path, resolv_conf: Path | None) -> None:
    for sub in ("proc", "dev"):
        (root / sub).mkdir(exist_ok=True)
    if resolv_conf is not None:
        target = root / "etc" / "resolv.conf"
        if target.is_symlink():
            target.unlink()
        if not target.exists():
            target.touch()


def run_in_chroot(
    root: Path,
    argv: Sequence[str],
    *,
    resolv_conf: Path | None = None,
    timeout: float | None = None,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one command in the chroot and wait for it (stdout+stderr captured as text)."""
    _prepare(root, resolv_conf)
    script = _namespace_script(root, resolv_conf, None)
    cmd = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh"]
    return subprocess.run(
        [*cmd, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        text=True,
        timeout=timeout,
        env=dict(env if env is not None else CHROOT_ENV),
        check=False,
    )


@dataclass(frozen=True)
class Supervision:
    """Where a supervised program's supervisor keeps its pid and its restart log."""

    leader_pidfile: Path
    restarts: Path


def spawn_in_chroot(
    root: Path,
    argv: Sequence[str],
    *,
    pidfile: Path,
    logfile: Path,
    resolv_conf: Path | None = None,
    timeout: float = 10.0,
    supervise: Supervision | None = None,
) -> int:
    """Start a long-running program in the chroot, detached; returns its pid.

    Unsupervised, the pid is the program's own and it leads its session (sh writes `$$`
    and then `exec`s into unshare's child chain: unshare, sh and chroot all exec, none
    forks). Supervised, the session leader is the supervising shell (its pid in
    `supervise.leader_pidfile`) and the program is its child. This returns once `pidfile`
    names a process running the program itself (no longer sh or chroot).
    """
    program = os.path.basename(argv[0])
    _prepare(root, resolv_conf)
    pidfile.unlink(missing_ok=True)
    if supervise is None:
        script = _namespace_script(root, resolv_conf, pidfile)
    else:
        supervise.leader_pidfile.unlink(missing_ok=True)
        script = _supervisor_script(
            root, resolv_conf, supervise.leader_pidfile, pidfile, supervise.restarts
        )
    cmd = [
        "setsid",
        "-f",
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        script,
        "sh",
        *argv,
    ]
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as log:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=dict(CHROOT_ENV),
            check=False,
            timeout=timeout,
        )
    if done.returncode != 0:
        raise LabProcessError(f"could not start {argv[0]} (setsid exit {done.returncode})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = read_pid(pidfile)
        leader = pid if supervise is None else read_pid(supervise.leader_pidfile)
        if pid is not None and leader is not None:
            if lab_process(pid, program, session=leader):
                return pid
            if not alive(pid) and supervise is None:
                break
        time.sleep(0.005)
    raise LabProcessError(f"{argv[0]} did not start: see {logfile}")


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except (FileNotFoundError, PermissionError):
        return None
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    session: int
    state: str
    comm: str


def proc_info(pid: int) -> ProcInfo | None:
    """From /proc/PID/stat, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcInfo(pid, int(fields[1]), int(fields[3]), fields[0], comm)


def alive(pid: int) -> bool:
    """Running. A zombie is not (gone, waiting to be reaped), unless other threads of it
    still run: a thread group whose main thread exited shows Z while the others finish."""
    info = proc_info(pid)
    if info is None:
        return False
    if info.state not in ("Z", "X"):
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def lab_process(pid: int | None, program: str, *, session: int | None = None) -> bool:
    """The pid is one of ours: alive, in `session` (default: leading its own session, as
    `setsid` makes it), running `program`."""
    if pid is None:
        return False
    info = proc_info(pid)
    if info is None or info.session != (pid if session is None else session) or not alive(pid):
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return os.path.basename(exe.removesuffix(" (deleted)")) == program


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def session_members(session: int) -> list[int]:
    """Live processes of a session (the leader first when alive)."""
    found = []
    for pid in all_pids():
        info = proc_info(pid)
        if info is not None and info.session == session and alive(pid):
            found.append(pid)
    return sorted(found, key=lambda p: p != session)


def chrooted_in(root: Path) -> list[int]:
    """Live processes whose root directory is `root` (what the lab started, whatever it is)."""
    target = os.path.realpath(root)
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            link = os.readlink(f"/proc/{pid}/root")
        except OSError:
            continue
        if link.removesuffix(" (deleted)") == target and alive(pid):
            found.append(pid)
    return found


def supervisors_of(root: Path) -> list[int]:
    """Live supervising shells of programs in `root` (not chrooted themselves, so
    `chrooted_in` misses them): found by the `chroot ROOT` line of their script."""
    marker = f"chroot {_quote(os.path.realpath(root))} ".encode()
    found = []
    for pid in all_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"/bin/sh\0-c\0") and marker in cmdline and alive(pid):
            found.append(pid)
    return found


def stop(pid: int, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """SIGTERM a lab program (and its session), SIGKILL what is left after `timeout`.

    Returns True when it went away on the first signal.
    """
    members = session_members(pid)
    _signal(members or [pid], sig)
    if _wait_gone(members or [pid], timeout):
        return True
    _signal(session_members(pid) or [pid], signal.SIGKILL)
    if not _wait_gone([pid, *members], 5.0):
        raise LabProcessError(f"process {pid} survived SIGKILL")
    return False


def kill_all(pids: Sequence[int], timeout: float = 5.0) -> None:
    """SIGTERM then SIGKILL these pids (left-overs found by `chrooted_in`)."""
    _signal(pids, signal.SIGTERM)
    if not _wait_gone(pids, timeout):
        _signal(pids, signal.SIGKILL)
        if not _wait_gone(pids, 5.0):
            raise LabProcessError(f"processes {list(pids)} survived SIGKILL")


def wait_reaped(pids: Sequence[int], timeout: float = 5.0) -> bool:
    """Until these pids have no /proc entry at all (zombies reaped by init); best effort."""
    deadline = time.monotonic() + timeout
    while any(os.path.exists(f"/proc/{pid}") for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not any(alive(pid) for pid in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


@dataclass(frozen=True)
class SocketInfo:
    """An IPv4/IPv6 socket a process holds (from /proc/net/{tcp,udp}{,6})."""

    proto: str
    """tcp, udp, tcp6, udp6"""
    address: str
    port: int
    listening: bool
    """TCP in LISTEN state, or UDP not connected to a peer."""
    pid: int


def sockets_of(pids: Sequence[int]) -> list[SocketInfo]:
    """The sockets these processes hold, with their local address (for the 127.0.0.1 check)."""
    owner: dict[str, int] = {}
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                link = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[link[8:-1]] = pid
    found = []
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            inode = fields[9]
            if inode not in owner:
                continue
            local, remote, state = fields[1], fields[2], fields[3]
            address, port = _decode_address(local)
            remote_port = int(remote.rsplit(":", 1)[1], 16)
            listening = state == "0A" if proto.startswith("tcp") else remote_port == 0
            found.append(SocketInfo(proto, address, port, listening, owner[inode]))
    return found


def _decode_address(text: str) -> tuple[str, int]:
    hex_addr, hex_port = text.rsplit(":", 1)
    raw = bytes.fromhex(hex_addr)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(hex_port, 16)
