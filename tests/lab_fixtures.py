"""The Asterisk lab as a pytest session fixture: up once per test session, down at the end.

Import the fixture in a test module (`from tests.lab_fixtures import lab`) to get a running
lab (`cloudpbx.lab.Lab`): Asterisk on `lab.ami_address`, phones via `lab.phone(ext)`.
Nothing is skipped: without root, or when the chroot cannot be built, the tests that use
it fail with the reason.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudpbx.lab import PHONES, Lab, LabError
from cloudpbx.lab.build import mounts_under
from cloudpbx.lab.proc import alive, all_pids, chrooted_in, supervisors_of

LAB_PROGRAMS = ("asterisk", "baresip")
SESSION_WAIT_S = 900
"""How long a test session waits for another one that holds the lab (same root)."""


def lab_programs_running(root: Path) -> list[str]:
    """Live processes of the lab: anything chrooted in `root`, the phones' supervisors, and
    any asterisk/baresip started from it. Empty once the lab is down."""
    found = [f"{pid} (chrooted)" for pid in chrooted_in(root)]
    found += [f"{pid} (supervisor)" for pid in supervisors_of(root)]
    prefix = os.path.realpath(root) + "/"
    for pid in all_pids():
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if os.path.basename(exe) in LAB_PROGRAMS and exe.startswith(prefix) and alive(pid):
            found.append(f"{pid} ({exe})")
    return found


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The lab, up (built first if needed: ~2 min from nothing, ~1-3 s when built)."""
    if os.geteuid() != 0:
        pytest.fail("the Asterisk lab tests need root (debootstrap, chroot, namespaces)")
    the_lab = Lab()
    # One test session at a time per lab: another session's `down` would pull the PBX
    # from under this one. Wait for it rather than break it.
    lock_path = the_lab.root.parent / f".{the_lab.root.name}.tests.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock_session(lock, lock_path)
        started = time.monotonic()
        try:
            the_lab.up(timeout=90)
        except LabError as exc:
            pytest.fail(f"the Asterisk lab did not come up: {exc}")
        the_lab.timings["fixture_up"] = time.monotonic() - started
        try:
            yield the_lab
        finally:
            _report_restarts(the_lab, request.config)
            the_lab.down()
            left = lab_programs_running(the_lab.root)
            mounted = mounts_under(the_lab.root)
            if left or mounted:
                raise RuntimeError(f"lab down left processes {left} / mounts {mounted}")
    finally:
        os.close(lock)


def _report_restarts(lab: Lab, config: pytest.Config) -> None:
    """Phones the lab restarted during the session (test_lab crashes 103 on purpose once),
    each with its time and exit status, written on pytest's terminal report."""
    restarts = {ext: lines for ext in PHONES if (lines := lab.phone_restarts(ext))}
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if restarts and reporter is not None:
        reporter.write_line(f"lab: phones restarted during this session: {restarts}")


def _lock_session(fd: int, path: Path) -> None:
    deadline = time.monotonic() + SESSION_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                pytest.fail(f"another test session held the lab ({path}) for {SESSION_WAIT_S} s")
            time.sleep(0.5)
