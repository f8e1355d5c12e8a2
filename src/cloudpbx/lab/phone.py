"""Driving a baresip soft phone over its ctrl_tcp socket.

ctrl_tcp speaks netstring-framed JSON (`45:{"command":"dial","params":"500","token":"x"},`).
Replies carry `"response": true` and our token; events (`"event": true`, `"type":
"CALL_ESTABLISHED"`...) arrive on the same connection whenever they happen. baresip sends
them to its newest connection only, and only while connected: keep one `Phone` per phone,
connected before the call (`Lab.phone(ext)` does both).
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

PhoneMessage = dict[str, Any]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PhoneError(RuntimeError):
    """The phone's ctrl_tcp socket failed, or a command got no reply in time."""


class Phone:
    """One baresip phone: `dial`, `hangup`, `hold`, `resume`, `reginfo`, and its events."""

    def __init__(self, ext: int, host: str, port: int) -> None:
        self.ext = ext
        self.host = host
        self.port = port
        self.events: list[PhoneMessage] = []
        """Events received and not yet taken by `wait_event` (oldest first)."""
        self.history: list[PhoneMessage] = []
        """Every event received on this connection, for looking back."""
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._tokens = itertools.count(1)

    def __repr__(self) -> str:
        return f"Phone({self.ext}, {self.host}:{self.port})"

    def connect(self, timeout: float = 5.0) -> None:
        if self._sock is not None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.create_connection((self.host, self.port), timeout=timeout)
                return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise PhoneError(f"phone {self.ext} ctrl_tcp {self.port}: {exc}") from exc
                time.sleep(0.05)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buffer = b""

    def __enter__(self) -> Phone:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------

    def command(
        self, command: str, params: str | None = None, timeout: float = 5.0
    ) -> PhoneMessage:
        """Send one command; return baresip's reply (`ok`, `data`)."""
        self.connect()
        token = f"lab-{self.ext}-{next(self._tokens)}"
        body: PhoneMessage = {"command": command, "token": token}
        if params is not None:
            body["params"] = params
        payload = json.dumps(body).encode()
        assert self._sock is not None
        try:
            self._sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        except OSError as exc:
            self.close()
            raise PhoneError(f"phone {self.ext}: {exc}") from exc
        return self._wait(lambda m: bool(m.get("response")) and m.get("token") == token, timeout)

    def dial(self, number: str | int) -> PhoneMessage:
        """Call a number of the PBX (`102`, `500`, `600`, `700`)."""
        return self.command("dial", str(number))

    def hangup(self) -> PhoneMessage:
        return self.command("hangup")

    def hold(self) -> PhoneMessage:
        return self.command("hold")

    def resume(self) -> PhoneMessage:
        """baresip 1.1.0 may answer ok=false ("Invalid argument") although it resumed."""
        return self.command("resume")

    def answer(self) -> PhoneMessage:
        return self.command("accept")

    def reginfo(self) -> str:
        """baresip's registration summary (text)."""
        reply = self.command("reginfo")
        return str(reply.get("data", ""))

    def registered(self) -> bool:
        """Whether the account shows as registered (`OK` in reginfo)."""
        text = _ANSI.sub("", self.reginfo())
        return re.search(r"\sOK\s", text) is not None

    # -- events ------------------------------------------------------------------------

    def wait_event(
        self, predicate: Callable[[PhoneMessage], bool] | str, timeout: float = 10.0
    ) -> PhoneMessage:
        """The first event (kept or new) matching: an event type, or a predicate."""
        match = _type_named(predicate) if isinstance(predicate, str) else predicate
        for index, event in enumerate(self.events):
            if match(event):
                del self.events[index]
                return event
        self.connect()
        event = self._wait(lambda m: bool(m.get("event")) and match(m), timeout)
        return event

    def drain(self, seconds: float = 0.0) -> list[PhoneMessage]:
        """Read what arrives for `seconds`; return (and forget) every kept event."""
        self.connect()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self._take(self._read(deadline - time.monotonic()))
            except TimeoutError:
                break
        events, self.events = self.events, []
        return events

    # -- reading -----------------------------------------------------------------------

    def _take(self, message: PhoneMessage) -> None:
        if message.get("event"):
            self.events.append(message)
            self.history.append(message)

    def _wait(self, match: Callable[[PhoneMessage], bool], timeout: float) -> PhoneMessage:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PhoneError(f"phone {self.ext}: nothing matching within {timeout:.1f} s")
            try:
                message = self._read(remaining)
            except TimeoutError:
                raise PhoneError(
                    f"phone {self.ext}: nothing matching within {timeout:.1f} s"
                ) from None
            if match(message):
                if message.get("event"):
                    self.history.append(message)
                return message
            self._take(message)

    def _read(self, timeout: float) -> PhoneMessage:
        deadline = time.monotonic() + timeout
        while True:
            message = self._parse()
            if message is not None:
                return message
            self._fill(deadline - time.monotonic())

    def _parse(self) -> PhoneMessage | None:
        colon = self._buffer.find(b":")
        if colon < 0:
            return None
        length_text = self._buffer[:colon]
        if not length_text.isdigit():
            self.close()
            raise PhoneError(f"phone {self.ext}: bad netstring {self._buffer[:40]!r}")
        end = colon + 1 + int(length_text)
        if len(self._buffer) < end + 1:
            return None
        payload, self._buffer = self._buffer[colon + 1 : end], self._buffer[end + 1 :]
        try:
            message = json.loads(payload)
        except ValueError as exc:
            raise PhoneError(f"phone {self.ext}: bad JSON {payload[:80]!r}") from exc
        return message if isinstance(message, dict) else {"data": message}

    def _fill(self, timeout: float) -> None:
        if self._sock is None:
            raise PhoneError(f"phone {self.ext}: not connected")
        if timeout <= 0:
            raise TimeoutError
        self._sock.settimeout(timeout)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise
        except OSError as exc:
            self.close()
            raise PhoneError(f"phone {self.ext}: {exc}") from exc
        if not chunk:
            self.close()
            raise PhoneError(f"phone {self.ext}: ctrl_tcp connection closed")
        self._buffer += chunk


def _type_named(name: str) -> Callable[[PhoneMessage], bool]:
    def match(message: PhoneMessage) -> bool:
        return message.get("type") == name

    return match


def strip_ansi(text: str) -> str:
    """baresip colours its `reginfo` text."""
    return _ANSI.sub("", text)
