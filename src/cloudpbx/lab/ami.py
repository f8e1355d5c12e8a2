"""A small blocking AMI client: enough to see the lab come up and to check it in tests.

Not the project's AMI adapter (that lives in `cloudpbx.adapters.asterisk`): this one only
logs in, sends actions, collects list answers and waits for events.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Callable
from types import TracebackType

Message = dict[str, str]
"""One AMI message: header -> value (a repeated header keeps its last value)."""
Header = str | int | list[str]
"""An action header's value; a list is sent as the header repeated."""


class AmiError(RuntimeError):
    """AMI could not be reached, refused the login, or did not answer in time."""


class AmiClient:
    """One AMI session over TCP. Use as a context manager, or `connect()` + `close()`."""

    def __init__(
        self, host: str, port: int, username: str, secret: str, *, id_prefix: str = "lab"
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.greeting = ""
        self.events: list[Message] = []
        """Events received and not yet taken by `wait_event` (oldest first)."""
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._ids = itertools.count(1)
        self._id_prefix = id_prefix

    def connect(self, *, events: bool | str = True, timeout: float = 5.0) -> Message:
        """Connect and log in; `events` False sends `Events: off`, a string is the filter."""
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise AmiError(f"AMI {self.host}:{self.port}: {exc}") from exc
        self.greeting = self._read_line(timeout).strip()
        if not self.greeting.startswith("Asterisk Call Manager"):
            self.close()
            raise AmiError(f"AMI {self.host}:{self.port}: unexpected greeting {self.greeting!r}")
        flag = "on" if events is True else "off" if events is False else events
        reply = self.action(
            "Login", Username=self.username, Secret=self.secret, Events=flag, timeout=timeout
        )
        if reply.get("Response") != "Success":
            self.close()
            raise AmiError(f"AMI login refused: {reply.get('Message', reply)}")
        return reply

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def logoff(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(AmiError, OSError):
                self.action("Logoff", timeout=2.0)
            self.close()

    def __enter__(self) -> AmiClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.logoff()

    # -- actions -----------------------------------------------------------------------

    def send(self, action: str, **headers: Header) -> str:
        """Send an action without waiting; returns its ActionID."""
        if self._sock is None:
            raise AmiError("AMI is not connected")
        action_id = str(headers.pop("ActionID", f"{self._id_prefix}-{next(self._ids)}"))
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        for key, value in headers.items():
            # A list repeats the header (`Variable:` of Originate).
            values = value if isinstance(value, list | tuple) else [value]
            lines += [f"{key}: {item}" for item in values]
        self._transmit(("\r\n".join(lines) + "\r\n\r\n").encode())
        return action_id

    def _transmit(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(data)

    def action(self, action: str, *, timeout: float = 5.0, **headers: Header) -> Message:
        """Send an action and return its response (events met meanwhile are kept)."""
        action_id = self.send(action, **headers)
        return self._wait(lambda m: "Response" in m and m.get("ActionID") == action_id, timeout)

    def list_action(
        self, action: str, *, timeout: float = 5.0, **headers: Header
    ) -> tuple[Message, list[Message]]:
        """A list action: the response and the events up to `EventList: Complete`.

        A response other than Success returns at once with no events.
        """
        action_id = self.send(action, **headers)
        deadline = time.monotonic() + timeout
        response = self._wait(lambda m: "Response" in m and m.get("ActionID") == action_id, timeout)
        items: list[Message] = []
        if response.get("Response") != "Success":
            return response, items
        while True:
            remaining = deadline - time.monotonic()
            event = self._wait(
                lambda m: "Event" in m and m.get("ActionID") == action_id, max(remaining, 0.0)
            )
            if event.get("EventList") == "Complete":
                return response, items
            items.append(event)

    def extension_states(self, timeout: float = 5.0) -> dict[str, Message]:
        """`ExtensionStateList`: exten -> its ExtensionStatus item (Status, StatusText...)."""
        _, items = self.list_action("ExtensionStateList", timeout=timeout)
        return {item["Exten"]: item for item in items if "Exten" in item}

    # -- events ------------------------------------------------------------------------

    def wait_event(
        self, predicate: Callable[[Message], bool] | str, timeout: float = 10.0
    ) -> Message:
        """The first event (kept or new) matching: an event name, or a predicate."""
        match = _event_named(predicate) if isinstance(predicate, str) else predicate
        for index, event in enumerate(self.events):
            if match(event):
                del self.events[index]
                return event
        return self._wait(lambda m: "Event" in m and match(m), timeout, keep_events=True)

    def drain(self, seconds: float = 0.0) -> list[Message]:
        """Read what arrives for `seconds`; return (and forget) every kept event."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                message = self._read_message(deadline - time.monotonic())
            except TimeoutError:
                break
            if "Event" in message:
                self.events.append(message)
        events, self.events = self.events, []
        return events

    # -- reading -----------------------------------------------------------------------

    def _wait(
        self, match: Callable[[Message], bool], timeout: float, keep_events: bool = True
    ) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AmiError(f"AMI: nothing matching within {timeout:.1f} s")
            try:
                message = self._read_message(remaining)
            except TimeoutError:
                raise AmiError(f"AMI: nothing matching within {timeout:.1f} s") from None
            if match(message):
                return message
            if keep_events and "Event" in message and "ActionID" not in message:
                self.events.append(message)

    def _fill(self, timeout: float) -> None:
        if self._sock is None:
            raise AmiError("AMI is not connected")
        self._sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise
        except OSError as exc:
            raise AmiError(f"AMI connection lost: {exc}") from exc
        if not chunk:
            raise AmiError("AMI connection closed by asterisk")
        self._received(chunk)
        self._buffer += chunk

    def _received(self, chunk: bytes) -> None:
        """Every byte read from Asterisk passes here (the transcript recorder keeps them)."""

    def _read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self._buffer:
            self._fill(deadline - time.monotonic())
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def _read_message(self, timeout: float) -> Message:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._buffer:
            self._fill(deadline - time.monotonic())
        raw, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        message: Message = {}
        for line in raw.decode(errors="replace").split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                message[key.strip()] = value.strip()
        return message


def _event_named(name: str) -> Callable[[Message], bool]:
    def match(message: Message) -> bool:
        return message.get("Event") == name

    return match
