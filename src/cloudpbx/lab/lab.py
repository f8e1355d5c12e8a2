"""`Lab`: build, start, stop and inspect the project's Asterisk lab (the `MojaCentrala` PBX)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cloudpbx.lab import templates
from cloudpbx.lab.ami import AmiClient, AmiError
from cloudpbx.lab.build import (
    PRISTINE_CONFIG,
    build,
    build_info,
    check_host,
    is_built,
    mounts_under,
)
from cloudpbx.lab.errors import LabError
from cloudpbx.lab.phone import Phone
from cloudpbx.lab.proc import (
    Supervision,
    chrooted_in,
    kill_all,
    lab_process,
    proc_info,
    read_pid,
    run_in_chroot,
    spawn_in_chroot,
    stop,
    supervisors_of,
    wait_reaped,
)
from cloudpbx.lab.settings import (
    MOH_DIR,
    PHONES,
    RECORDINGS_DIR,
    SPEECH,
    SPEECH_SECONDS,
    STATE_DIR,
    LabSettings,
    default_root,
    endpoint,
    phone_ctrl_port,
    phone_sip_port,
)

Log = Callable[[str], None]

SUPERVISOR = os.path.basename(os.path.realpath("/bin/sh"))
"""The program a phone's supervisor runs as (`/bin/sh`: dash on Debian)."""
ASTERISK_BIN = "/usr/sbin/asterisk"
BARESIP_BIN = "/usr/bin/baresip"
ASTERISK_DIRS = (
    "etc/asterisk",
    "var/lib/asterisk",
    "var/spool/asterisk",
    "var/log/asterisk",
    "var/cache/asterisk",
    "run/asterisk",
)


def _quiet(_: str) -> None:
    pass


@dataclass
class LabStatus:
    """What `cloudpbx lab status` shows."""

    root: Path
    built: bool
    asterisk_pid: int | None
    phone_pids: dict[int, int | None]
    ami_address: tuple[str, int]
    ami_ok: bool
    phone_restarts: dict[int, int] = field(default_factory=dict)
    """How often the lab restarted each phone since `up` (a crash, a stray signal)."""
    extension_states: dict[int, str] = field(default_factory=dict)
    """Exten -> `Status StatusText` (e.g. `0 Idle`), when AMI answered."""
    recordings_dir: Path = Path()
    sip_address: tuple[str, int] = ("127.0.0.1", 5160)
    build_info: dict[str, object] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.asterisk_pid is not None and all(self.phone_pids.values())


class Lab:
    """The lab at `root` (default: `CLOUDPBX_LAB_ROOT` or /var/lib/cloudpbx-lab/root).

    While the lab runs, the ports it was started with (saved in its state file) win over
    the defaults, so `Lab().down()` stops a lab started with another `ami_port`.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        ami_port: int | None = None,
        ami_secret: str | None = None,
        sip_port: int | None = None,
        mirror: str | None = None,
        log: Log | None = None,
    ) -> None:
        base = Path(root) if root is not None else default_root()
        saved = _read_json(base / STATE_DIR.lstrip("/") / "state.json")
        running = lab_process(
            read_pid(base / STATE_DIR.lstrip("/") / "run/asterisk.pid"), "asterisk"
        )
        if not running:
            saved = {}

        def pick(value: int | str | None, key: str, default: int | str) -> int | str:
            if value is not None:
                return value
            found = saved.get(key)
            return found if isinstance(found, type(default)) else default

        self.settings = LabSettings(
            root=base,
            ami_port=int(pick(ami_port, "ami_port", 5038)),
            ami_secret=str(pick(ami_secret, "ami_secret", "apisecret")),
            sip_port=int(pick(sip_port, "sip_port", 5160)),
            mirror=mirror,
        )
        self.log: Log = log or _quiet
        self.timings: dict[str, float] = {}
        """Seconds taken by the last build / up / down steps, by name."""
        self._phones: dict[int, Phone] = {}
        self._phone_owner: dict[int, int | None] = {}
        """The baresip pid each kept `Phone` was connected to."""
        self._lock_depth = 0
        self._lock_file: int | None = None

    # -- where things are ----------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self.settings.root

    @property
    def ami_address(self) -> tuple[str, int]:
        return (self.settings.host, self.settings.ami_port)

    @property
    def sip_address(self) -> tuple[str, int]:
        return (self.settings.host, self.settings.sip_port)

    @property
    def recordings_dir(self) -> Path:
        """Host path of the chroot's /var/spool/asterisk/monitor (`<uniqueid>.wav` files)."""
        return self._host(RECORDINGS_DIR)

    @property
    def cdr_csv_dir(self) -> Path:
        return self._host("/var/log/asterisk/cdr-csv")

    @property
    def queue_log(self) -> Path:
        return self._host("/var/log/asterisk/queue_log")

    @property
    def asterisk_log(self) -> Path:
        return self._host("/var/log/asterisk/messages.log")

    @property
    def state_dir(self) -> Path:
        return self._host(STATE_DIR)

    def phone_log(self, ext: int) -> Path:
        return self.state_dir / "log" / f"phone-{ext}.log"

    def _host(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def _pidfile(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.pid"

    def _restarts_file(self, ext: int) -> Path:
        return self.state_dir / "run" / f"phone-{ext}.restarts"

    # -- state -----------------------------------------------------------------------------

    def asterisk_pid(self) -> int | None:
        pid = read_pid(self._pidfile("asterisk"))
        return pid if lab_process(pid, "asterisk") else None

    def phone_pid(self, ext: int) -> int | None:
        """The phone's baresip, while it runs (None between a crash and its restart)."""
        leader = self.supervisor_pid(ext)
        pid = read_pid(self._pidfile(f"phone-{ext}"))
        return pid if leader is not None and lab_process(pid, "baresip", session=leader) else None

    def supervisor_pid(self, ext: int) -> int | None:
        """The shell that runs a phone and restarts it when it dies (its session leader)."""
        pid = read_pid(self._pidfile(f"phone-{ext}.supervisor"))
        return pid if lab_process(pid, SUPERVISOR) else None

    def phone_restarts(self, ext: int) -> list[str]:
        """One `<UTC time> <exit status>` per restart of the phone since the lab came up
        (status 139: killed by SIGSEGV, 137: SIGKILL sent by someone else than the lab)."""
        try:
            return self._restarts_file(ext).read_text().splitlines()
        except FileNotFoundError:
            return []

    def is_built(self) -> bool:
        return is_built(self.root)

    def is_up(self) -> bool:
        """Asterisk and the four phones' supervisors run (a phone being restarted counts;
        registration is checked by `up`, not here)."""
        return self.asterisk_pid() is not None and all(self.supervisor_pid(e) for e in PHONES)

    def status(self) -> LabStatus:
        asterisk = self.asterisk_pid()
        states: dict[int, str] = {}
        ami_ok = False
        if asterisk is not None:
            try:
                with self.ami(events=False) as ami:
                    ami_ok = True
                    for exten, item in ami.extension_states().items():
                        if exten.isdigit():
                            states[int(exten)] = f"{item.get('Status')} {item.get('StatusText')}"
            except AmiError:
                pass
        return LabStatus(
            root=self.root,
            built=self.is_built(),
            asterisk_pid=asterisk,
            phone_pids={ext: self.phone_pid(ext) for ext in PHONES},
            phone_restarts={ext: len(self.phone_restarts(ext)) for ext in PHONES},
            ami_address=self.ami_address,
            ami_ok=ami_ok,
            extension_states=states,
            recordings_dir=self.recordings_dir,
            sip_address=self.sip_address,
            build_info=build_info(self.root),
        )

    # -- build -----------------------------------------------------------------------------

    def build(self) -> bool:
        """Build the chroot if it is not built yet; True when it was built now."""
        with self._locked():
            started = time.monotonic()
            done = build(self.root, mirror=self.settings.mirror, log=self.log)
            if done:
                self.timings["build"] = time.monotonic() - started
            return done

    # -- up / down ---------------------------------------------------------------------

    def up(self, *, timeout: float = 60.0) -> bool:
        """Build if needed, start Asterisk and phones 101-104, wait for registrations.

        Returns False (and changes nothing) when the lab was already up.
        """
        with self._locked():
            started = time.monotonic()
            self.build()
            if self.is_up():
                return False
            if self.asterisk_pid() is None:
                leftovers = supervisors_of(self.root) + chrooted_in(self.root)
                if leftovers:
                    self.log(f"stopping left-over lab processes {leftovers}")
                    kill_all(leftovers)
                self._check_ports_free()
                t = time.monotonic()
                self._write_config()
                self.timings["config"] = time.monotonic() - t
                self._start_asterisk(timeout)
                for ext in PHONES:
                    self._restarts_file(ext).unlink(missing_ok=True)
            t = time.monotonic()
            missing = [ext for ext in PHONES if self.supervisor_pid(ext) is None]
            for ext in missing:
                self._stop_phone(ext, signal.SIGTERM)  # one not supervised (older cloudpbx)
                self._spawn_phone(ext)
            self.wait_registered(PHONES, timeout=timeout)
            self.timings["phones"] = time.monotonic() - t
            self._save_state()
            self.timings["up"] = time.monotonic() - started
            return True

    def down(self) -> bool:
        """Stop the phones and Asterisk (clean shutdowns, SIGKILL as a last resort).

        Returns False when nothing was running. Afterwards no process runs in the chroot
        and nothing is mounted under it.
        """
        with self._locked():
            started = time.monotonic()
            self.close()
            stopped: list[int] = []
            for ext in PHONES:
                stopped += self._stop_phone(ext, signal.SIGTERM)
            pid = self.asterisk_pid()
            if pid is not None:
                stop(pid, timeout=20.0)
                stopped.append(pid)
            self._pidfile("asterisk").unlink(missing_ok=True)
            leftovers = supervisors_of(self.root) + chrooted_in(self.root)
            if leftovers:
                self.log(f"stopping left-over lab processes {leftovers}")
                kill_all(leftovers)
                stopped += leftovers
            for point in sorted(mounts_under(self.root), key=len, reverse=True):
                if point != os.path.realpath(self.root):
                    subprocess.run(["umount", "-l", point], check=False)
            (self.state_dir / "state.json").unlink(missing_ok=True)
            # Our processes are orphans: init reaps them (here: within ~2 s).
            wait_reaped(stopped, timeout=5.0)
            self.timings["down"] = time.monotonic() - started
            return bool(stopped)

    def restart_asterisk(self, *, timeout: float = 60.0) -> None:
        """Stop and start Asterisk only (the phones keep running and re-register)."""
        with self._locked():
            if not (self.state_dir / "state.json").exists() or self.asterisk_pid() is None:
                raise LabError("the lab is not up: `up` first")
            pid = self.asterisk_pid()
            if pid is not None:
                stop(pid, timeout=20.0)
            self._start_asterisk(timeout)
            running = [ext for ext in PHONES if self.supervisor_pid(ext) is not None]
            # Contacts come back from astdb; qualify them now rather than within 15 s.
            with self.ami(events=False) as ami:
                for ext in running:
                    ami.action("PJSIPQualify", Endpoint=endpoint(ext))
            self.wait_registered(running, timeout=timeout)

    # -- phones --------------------------------------------------------------------------

    def phone(self, ext: int) -> Phone:
        """The ctrl_tcp controller of a phone, connected (one per phone, kept).

        baresip sends its events (CALL_INCOMING, CALL_ESTABLISHED...) only to the newest
        ctrl_tcp connection, so take the phones you want to watch before the call.
        """
        if ext not in PHONES:
            raise ValueError(f"no phone runs for {ext} (phones: {PHONES})")
        pid = self.phone_pid(ext)
        if ext in self._phones and self._phone_owner.get(ext) != pid:
            # The phone was restarted since: that connection went with the old process.
            self._phones.pop(ext).close()
        if ext not in self._phones:
            self._phones[ext] = Phone(ext, self.settings.host, phone_ctrl_port(ext))
            self._phone_owner[ext] = pid
        phone = self._phones[ext]
        phone.connect()
        return phone

    def stop_phone(self, ext: int) -> None:
        """Stop a phone cleanly (it un-REGISTERs: ExtensionStatus 4 Unavailable)."""
        with self._locked():
            self._stop_phone(ext, signal.SIGTERM)

    def kill_phone(self, ext: int) -> None:
        """SIGKILL a phone and its supervisor: no un-REGISTER and no restart, so Asterisk
        notices only by qualify (~17 s). `start_phone` brings it back."""
        with self._locked():
            self._stop_phone(ext, signal.SIGKILL)

    def _stop_phone(self, ext: int, sig: int) -> list[int]:
        """Stop the phone's session (supervisor and baresip); the pids that were stopped."""
        phone = self._phones.pop(ext, None)
        if phone is not None:
            phone.close()
        stopped = []
        for pid in (self.supervisor_pid(ext), self._stray_phone(ext)):
            if pid is not None:
                stop(pid, timeout=10.0, sig=sig)
                stopped.append(pid)
        self._pidfile(f"phone-{ext}").unlink(missing_ok=True)
        self._pidfile(f"phone-{ext}.supervisor").unlink(missing_ok=True)
        return stopped

    def _stray_phone(self, ext: int) -> int | None:
        """A baresip named by the pid file but not under a supervisor (a lab started by an
        older cloudpbx, or a supervisor killed by hand)."""
        pid = read_pid(self._pidfile(f"phone-{ext}"))
        info = proc_info(pid) if pid is not None else None
        if info is None or self.supervisor_pid(ext) is not None:
            return None
        return pid if lab_process(pid, "baresip", session=info.session) else None

    def start_phone(self, ext: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Start a phone (if not running); with `wait`, until Asterisk shows it registered."""
        if ext not in PHONES:
            raise ValueError(f"no phone for {ext} (phones: {PHONES})")
        with self._locked():
            if self.supervisor_pid(ext) is None:
                self._stop_phone(ext, signal.SIGTERM)
                self._spawn_phone(ext)
            if wait:
                self.wait_registered([ext], timeout=timeout)

    def wait_registered(self, exts: Iterable[int], *, timeout: float = 30.0) -> None:
        """Until AMI's ExtensionStateList shows none of `exts` Unavailable (4)."""
        wanted = [str(ext) for ext in exts]
        if not wanted:
            return
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        with self.ami(events=False) as ami:
            while True:
                states = ami.extension_states()
                last = {e: states[e].get("Status", "?") for e in wanted if e in states}
                if all(last.get(e) not in (None, "4", "-1", "-2") for e in wanted):
                    return
                if time.monotonic() >= deadline:
                    raise LabError(
                        f"phones not registered after {timeout:.0f} s: {last} "
                        f"(see {self.phone_log(int(wanted[0]))})"
                    )
                for ext in wanted:
                    if self.supervisor_pid(int(ext)) is None:
                        raise LabError(f"phone {ext} exited: see {self.phone_log(int(ext))}")
                time.sleep(0.05)

    def close(self) -> None:
        """Close the phone controllers' connections."""
        for phone in self._phones.values():
            phone.close()
        self._phones.clear()
        self._phone_owner.clear()

    # -- AMI -----------------------------------------------------------------------------

    def ami(self, *, events: bool | str = True, timeout: float = 5.0) -> AmiClient:
        """A logged-in AMI session (user `api`); close it (or use `with`)."""
        client = AmiClient(
            self.settings.host,
            self.settings.ami_port,
            self.settings.ami_user,
            self.settings.ami_secret,
        )
        client.connect(events=events, timeout=timeout)
        return client

    # -- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One lab operation at a time on this root (across processes too)."""
        if self._lock_depth == 0:
            check_host()
            lock = self.root.parent / f".{self.root.name}.lock"
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._lock_file = fd
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_file is not None:
                os.close(self._lock_file)
                self._lock_file = None

    def _check_ports_free(self) -> None:
        s = self.settings
        busy = []
        tcp = [s.ami_port, *(phone_ctrl_port(e) for e in PHONES)]
        tcp += [phone_sip_port(e) for e in PHONES]
        for port in tcp:
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((s.host, port)) == 0:
                    busy.append(f"tcp {port}")
        for port in [s.sip_port, *(phone_sip_port(e) for e in PHONES)]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((s.host, port))
                except OSError:
                    busy.append(f"udp {port}")
        if busy:
            raise LabError(f"ports in use on {s.host}: {', '.join(busy)} (another PBX running?)")

    def _write_config(self) -> None:
        root = self.root
        etc = root / "etc/asterisk"
        pristine = self._host(PRISTINE_CONFIG)
        if not pristine.is_dir():
            raise LabError(f"{pristine} is missing: rebuild the lab (remove {root})")
        shutil.rmtree(etc)
        shutil.copytree(pristine, etc, symlinks=True)
        for name, text in templates.asterisk_files(self.settings).items():
            (etc / name).write_text(text)
        for sub in ASTERISK_DIRS:
            path = root / sub
            path.mkdir(parents=True, exist_ok=True)
            _chown_root(path)
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "log"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.state_dir / "resolv.conf").write_text(templates.resolv_conf())
        hosts = root / "etc/hosts"
        if not hosts.exists():
            hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
        for ext in PHONES:
            folder = self._host(templates.phone_dir(ext))
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in templates.phone_files(self.settings, ext).items():
                (folder / name).write_text(text)
        self._synthesize_speech()
        self._synthesize_music()

    def _synthesize_speech(self) -> None:
        """`<ext>.wav` for each phone: its sentence, 8 kHz mono 16-bit, looped to 300 s."""
        script = (
            'espeak-ng -v pl -s 150 -w "$1" "$2" && '
            f'sox "$1" -r 8000 -c 1 -b 16 "$3" pad 0 0.7 repeat 200 trim 0 {SPEECH_SECONDS} && '
            'rm -f "$1"'
        )
        for ext in PHONES:
            inside = templates.phone_dir(ext)
            wav = self._host(f"{inside}/{ext}.wav")
            stamp = wav.with_suffix(".txt")
            want = f"{SPEECH[ext]}\n{SPEECH_SECONDS}\n"
            if wav.exists() and stamp.exists() and stamp.read_text() == want:
                continue
            argv = ["sh", "-c", script, "sh", f"{inside}/speech.tmp.wav", SPEECH[ext]]
            done = run_in_chroot(self.root, [*argv, f"{inside}/{ext}.wav"], timeout=120)
            if done.returncode != 0 or not wav.exists():
                raise LabError(f"speech synthesis for {ext} failed:\n{done.stdout}")
            stamp.write_text(want)

    def _synthesize_music(self) -> None:
        """The `default` music-on-hold class: 20 s of a slow two-tone chime, 8 kHz wav."""
        wav = self._host(f"{MOH_DIR}/chime.wav")
        if wav.exists():
            return
        wav.parent.mkdir(parents=True, exist_ok=True)
        argv = ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", f"{MOH_DIR}/chime.wav"]
        argv += ["synth", "1", "sine", "523", "sine", "659", "fade", "0.05", "1", "0.4"]
        argv += ["vol", "0.3", "repeat", "19"]
        done = run_in_chroot(self.root, argv, timeout=60)
        if done.returncode != 0 or not wav.exists():
            raise LabError(f"music on hold synthesis failed:\n{done.stdout}")

    def _start_asterisk(self, timeout: float) -> None:
        t = time.monotonic()
        log = self.state_dir / "log" / "asterisk.out"
        pid = spawn_in_chroot(
            self.root,
            [ASTERISK_BIN, "-f", "-n"],
            pidfile=self._pidfile("asterisk"),
            logfile=log,
            resolv_conf=self.state_dir / "resolv.conf",
        )
        self.log(f"asterisk started (pid {pid}), waiting for FullyBooted on AMI")
        deadline = time.monotonic() + timeout
        while True:
            if not lab_process(pid, "asterisk"):
                raise LabError(f"asterisk exited at start: see {log} and {self.asterisk_log}")
            try:
                with self.ami(events="system", timeout=2.0) as ami:
                    ami.wait_event("FullyBooted", max(deadline - time.monotonic(), 0.1))
                    break
            except AmiError as exc:
                if time.monotonic() >= deadline:
                    raise LabError(f"no FullyBooted on AMI within {timeout:.0f} s: {exc}") from exc
                time.sleep(0.1)
        self.timings["asterisk_boot"] = time.monotonic() - t

    def _spawn_phone(self, ext: int) -> None:
        inside = templates.phone_dir(ext)
        if not self._host(f"{inside}/config").exists():
            raise LabError(f"phone {ext} has no config: run `up` first")
        pid = spawn_in_chroot(
            self.root,
            [BARESIP_BIN, "-f", inside],
            pidfile=self._pidfile(f"phone-{ext}"),
            logfile=self.phone_log(ext),
            resolv_conf=self.state_dir / "resolv.conf",
            supervise=Supervision(
                self._pidfile(f"phone-{ext}.supervisor"), self._restarts_file(ext)
            ),
        )
        self.log(f"phone {ext} started (pid {pid}, restarted by the lab if it dies)")

    def _save_state(self) -> None:
        s = self.settings
        state = {
            "ami_port": s.ami_port,
            "ami_secret": s.ami_secret,
            "sip_port": s.sip_port,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        path = self.state_dir / "state.json"
        path.write_text(json.dumps(state, indent=2) + "\n")
        path.chmod(0o600)


def _chown_root(path: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames, ""]:
            target = os.path.join(dirpath, name) if name else dirpath
            try:
                st = os.lstat(target)
                if st.st_uid != 0 or st.st_gid != 0:
                    os.lchown(target, 0, 0)
            except OSError:
                pass


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


__all__ = ["Lab", "LabError", "LabStatus"]
