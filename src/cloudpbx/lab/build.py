"""Building the lab chroot: Debian sid (minbase) with Asterisk, baresip, espeak-ng and sox.

Built once and re-used: a marker file records a finished build. A half-built tree (an
interrupted debootstrap) is wiped and started again; an interrupted package install is just
run again (apt-get is idempotent).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cloudpbx.lab.errors import LabBuildError
from cloudpbx.lab.proc import run_in_chroot
from cloudpbx.lab.settings import PACKAGES, STATE_DIR, SUITE

MARKER = f"{STATE_DIR}/built.json"
"""Inside the chroot: written when the build finished."""
PRISTINE_CONFIG = "/etc/asterisk.dist"
"""Inside the chroot: the package's /etc/asterisk, kept to lay the lab config over it."""
APT_OPTIONS = ("-o", "Acquire::Check-Valid-Until=false", "-o", "APT::Color=0")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def check_host() -> None:
    """Root on Debian (or a derivative with apt-get), with unshare and chroot."""
    if os.geteuid() != 0:
        raise LabBuildError("the lab needs root (debootstrap, chroot, mount namespaces)")
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        raise LabBuildError("the lab needs a Debian host (apt-get, /etc/debian_version)")
    for tool in ("unshare", "chroot", "mount", "setsid"):
        if shutil.which(tool) is None:
            raise LabBuildError(f"{tool} is missing (util-linux / coreutils)")


def host_mirror(etc_apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt uses (for debootstrap: other hosts may be unreachable).

    Reads one-line `deb URL suite...` entries from sources.list(.d/*.list) and deb822
    stanzas from sources.list.d/*.sources; the first enabled `deb` entry for a plain suite
    (not -security/-updates) with component `main` wins.
    """
    candidates: list[tuple[str, list[str], list[str]]] = []  # (uri, suites, components)
    lists = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in lists:
        for line in _lines(path):
            parts = line.split()
            if not parts or parts[0] != "deb":
                continue
            parts = [p for p in parts[1:] if not p.startswith("[")]
            if parts and parts[0].endswith("]"):
                parts = parts[1:]
            if len(parts) >= 3:
                candidates.append((parts[0], [parts[1]], parts[2:]))
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in _stanzas(path):
            if stanza.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in stanza.get("types", "").split():
                continue
            suites = stanza.get("suites", "").split()
            comps = stanza.get("components", "").split()
            for uri in stanza.get("uris", "").split():
                candidates.append((uri, suites, comps))
    for uri, suites, comps in candidates:
        plain_suite = any("-" not in s and "/" not in s for s in suites)
        if "main" in comps and plain_suite and "security" not in uri:
            return uri.rstrip("/")
    raise LabBuildError(
        "no Debian mirror found in /etc/apt/sources.list(.d); pass --mirror or set "
        "CLOUDPBX_LAB_MIRROR"
    )


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError:
        return []
    return [line.split("#", 1)[0].strip() for line in text.splitlines()]


def _stanzas(path: Path) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in [*_raw_lines(path), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif raw[0] in " \t" and key:
            current[key] += " " + raw.strip()
        elif ":" in raw:
            name, value = raw.split(":", 1)
            key = name.strip().lower()
            current[key] = value.strip()
    return stanzas


def _raw_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def is_built(root: Path) -> bool:
    return (root / MARKER.lstrip("/")).is_file()


def mounts_under(path: Path) -> list[str]:
    """Host mount points at or below `path` (there should be none: the lab mounts privately)."""
    target = os.path.realpath(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == target or point.startswith(target + "/"):
            found.append(point)
    return found


def _run(cmd: list[str], log: Log, what: str, timeout: float) -> None:
    log(f"$ {' '.join(cmd)}")
    try:
        done = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabBuildError(f"{what}: timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise LabBuildError(f"{what} failed (exit {done.returncode}):\n{_tail(done.stdout)}")


def _tail(text: str | None, lines: int = 25) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def ensure_debootstrap(log: Log) -> None:
    if shutil.which("debootstrap") is not None:
        return
    log("installing debootstrap on the host (apt-get)")
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    install = [*env_cmd, "apt-get", "install", "-y", "-q", "--no-install-recommends"]
    try:
        _run([*install, "debootstrap"], log, "apt-get install debootstrap", 600)
    except LabBuildError:
        _run([*env_cmd, "apt-get", "update", "-q"], log, "apt-get update", 600)
        _run([*install, "debootstrap"], log, "apt-get install debootstrap", 600)


def build(
    root: Path,
    *,
    mirror: str | None = None,
    log: Log = _quiet,
    packages: Iterable[str] = PACKAGES,
) -> bool:
    """Build the chroot at `root` unless already built; True when something was done."""
    check_host()
    root = root.absolute()
    if is_built(root):
        _ensure_pristine_config(root)
        return False
    started = time.monotonic()
    mirror = (mirror or os.environ.get("CLOUDPBX_LAB_MIRROR") or host_mirror()).rstrip("/")
    ensure_debootstrap(log)
    unfinished = (root / "debootstrap").exists()  # debootstrap removes it when done
    if unfinished or (root.exists() and not (root / "usr/bin/apt-get").exists()):
        _wipe(root, log)
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        log(f"debootstrap {SUITE} into {root} from {mirror}")
        # In a private mount namespace: debootstrap's own /proc and /sys mounts cannot leak.
        _run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "debootstrap",
                "--variant=minbase",
                SUITE,
                str(root),
                mirror,
            ],
            log,
            "debootstrap",
            1800,
        )
    _install_packages(root, list(packages), log)
    _ensure_pristine_config(root)
    marker = root / MARKER.lstrip("/")
    marker.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "suite": SUITE,
        "mirror": mirror,
        "packages": list(packages),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - started, 1),
        "asterisk": _version(root, "asterisk"),
        "baresip": _version(root, "baresip-core"),
    }
    marker.write_text(json.dumps(info, indent=2) + "\n")
    log(f"chroot built in {info['seconds']} s")
    return True


def _wipe(root: Path, log: Log) -> None:
    mounted = mounts_under(root)
    if mounted:
        raise LabBuildError(f"{root} has mounts ({', '.join(mounted)}); unmount them first")
    log(f"removing the unfinished chroot {root}")
    _run(["rm", "-rf", "--one-file-system", str(root)], log, "rm", 600)


def _install_packages(root: Path, packages: list[str], log: Log) -> None:
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# cloudpbx lab: package scripts start no daemons\nexit 101\n")
    policy.chmod(0o755)
    resolv = Path("/etc/resolv.conf").resolve()
    for what, argv, timeout in (
        ("apt-get update", ["apt-get", *APT_OPTIONS, "update", "-q"], 900),
        (
            "apt-get install",
            ["apt-get", *APT_OPTIONS, "install", "-y", "-q", "--no-install-recommends", *packages],
            1800,
        ),
    ):
        log(f"chroot: {what}")
        try:
            done = run_in_chroot(root, argv, resolv_conf=resolv, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabBuildError(f"chroot {what}: timed out") from exc
        if done.returncode != 0:
            raise LabBuildError(f"chroot {what} failed ({done.returncode}):\n{_tail(done.stdout)}")
    missing = [p for p in ("usr/sbin/asterisk", "usr/bin/baresip") if not (root / p).exists()]
    if missing:
        raise LabBuildError(f"chroot lacks {', '.join(missing)} after apt-get install")


def _ensure_pristine_config(root: Path) -> None:
    pristine = root / PRISTINE_CONFIG.lstrip("/")
    if not pristine.exists():
        shutil.copytree(root / "etc/asterisk", pristine, symlinks=True)


def _version(root: Path, package: str) -> str:
    status = root / "var/lib/dpkg/status"
    block = ""
    for stanza in status.read_text(errors="replace").split("\n\n"):
        if stanza.startswith(f"Package: {package}\n"):
            block = stanza
            break
    for line in block.splitlines():
        if line.startswith("Version: "):
            return line.removeprefix("Version: ")
    return ""


def build_info(root: Path) -> dict[str, object]:
    marker = root / MARKER.lstrip("/")
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
