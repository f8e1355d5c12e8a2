"""What the lab is: where it lives, its ports, its extensions. No side effects here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ROOT = Path("/var/lib/cloudpbx-lab/root")
"""Where the chroot lives unless `--root` or `CLOUDPBX_LAB_ROOT` says otherwise."""

ROOT_ENV = "CLOUDPBX_LAB_ROOT"
MIRROR_ENV = "CLOUDPBX_LAB_MIRROR"

TENANT = "MojaCentrala"
"""The PBX (tenant) name: endpoint prefix, dialplan context, accountcode."""

EXTENSIONS = (101, 102, 103, 104, 105)
PHONES = (101, 102, 103, 104)
"""Extensions with a running soft phone (105 is never registered)."""
AUTO_ANSWER = (101, 102, 103)
"""Phones that answer at once; 104 rings forever."""
BUSY_AT_ONE = (102,)
"""Endpoints with `device_state_busy_at=1`: BUSY (not INUSE) while in a call."""

QUEUE = "Kolejka1"
QUEUE_EXTEN = 500
QUEUE_MEMBERS = (101, 102)
CONFERENCE = "SesjaRady"
CONFERENCE_EXTEN = 600
ECHO_EXTEN = 700

PACKAGES = ("asterisk", "asterisk-modules", "baresip-core", "espeak-ng", "sox")
"""Installed in the chroot with `--no-install-recommends`."""
SUITE = "sid"
"""Debian's bookworm has no asterisk package; sid has Asterisk 22."""

STATE_DIR = "/var/lib/cloudpbx-lab"
"""Inside the chroot: lab state (pid files, logs, phone configs, audio)."""
MOH_DIR = f"{STATE_DIR}/moh"
"""Inside the chroot: the files of the `default` music-on-hold class (synthesised tones)."""
RECORDINGS_DIR = "/var/spool/asterisk/monitor"
"""Inside the chroot: where MixMonitor writes `<uniqueid>.wav`."""

SPEECH = {
    101: "Dzień dobry, tu Anna, numer sto jeden. W czym mogę pomóc?",
    102: "Cześć, mówi Bartek, numer sto dwa. Słyszę cię bardzo dobrze.",
    103: "Witam serdecznie, tu Celina, numer sto trzy. Proszę mówić dalej.",
    104: "Tu numer sto cztery. Ten telefon dzwoni, ale nikt go nie odbiera.",
}
"""What each phone says (espeak-ng, Polish), looped for the whole call."""
SPEECH_SECONDS = 300
"""Length of each phone's audio file: baresip hangs up when its audio source ends."""


def default_root() -> Path:
    """`CLOUDPBX_LAB_ROOT` if set, else /var/lib/cloudpbx-lab/root."""
    value = os.environ.get(ROOT_ENV, "").strip()
    return Path(value) if value else DEFAULT_ROOT


def endpoint(ext: int) -> str:
    """`MojaCentrala-101`: the PJSIP endpoint, auth user and AOR of an extension."""
    return f"{TENANT}-{ext}"


def password(ext: int) -> str:
    return f"secret{ext}"


def phone_sip_port(ext: int) -> int:
    """SIP UDP+TCP port of a phone: 101 -> 5210 (baresip takes port+1 for TLS, so 10 apart)."""
    return 5200 + 10 * (ext - 100)


def phone_ctrl_port(ext: int) -> int:
    """ctrl_tcp port of a phone: 101 -> 4401."""
    return 4300 + ext


def phone_rtp_ports(ext: int) -> tuple[int, int]:
    """RTP range of a phone: 101 -> 11010-11019 (asterisk has 10000-10099)."""
    start = 11000 + 10 * (ext - 100)
    return start, start + 9


@dataclass(frozen=True)
class LabSettings:
    """The knobs of one lab. Everything listens on `host` (127.0.0.1)."""

    root: Path = field(default_factory=default_root)
    ami_port: int = 5038
    ami_user: str = "api"
    ami_secret: str = "apisecret"
    sip_port: int = 5160
    rtp_start: int = 10000
    rtp_end: int = 10099
    host: str = "127.0.0.1"
    mirror: str | None = None
    """Debian mirror for debootstrap; None: the host's own apt mirror."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).absolute())
        for name in ("ami_port", "sip_port", "rtp_start", "rtp_end"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ValueError(f"{name} {port} is not a port")
        if self.rtp_end < self.rtp_start:
            raise ValueError("rtp_end is below rtp_start")
        if not self.ami_secret or any(c in self.ami_secret for c in "\r\n;"):
            raise ValueError("ami_secret must be non-empty, one line, without ';'")
