"""AMI framing: bytes in, messages out; actions in, bytes out. No I/O.

What Asterisk 22 sends (see the lab transcripts under `tests/data/ami/`):

* first one line `Asterisk Call Manager/11.0.0\\r\\n` (the banner, no blank line after it);
* then messages, each a block of `Name: value` lines ended by an empty line;
* lines end in CRLF, but a bare LF is accepted too;
* `Event: TestEvent` (compiled into Debian's build) is followed by one extra empty line, so
  empty lines between messages are skipped;
* the same header may appear several times (`ChanVariable`, `Variable`, `Output`), so a
  message keeps its headers as an ordered list;
* header names are case-insensitive in practice (`Uniqueid` in channel events, `UniqueID`
  in `Event: Cdr`).

Old Asterisk versions answered `Action: Command` with `Response: Follows`, `Privilege`
and `ActionID`, then raw output lines (which may be empty or contain colons) up to
`--END COMMAND--`; that body is kept as repeated `Output` headers, the shape newer
versions send. (No transcript has one: Asterisk 22 answers with `Output:` headers.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

__all__ = [
    "AmiMessage",
    "AmiParser",
    "AmiProtocolError",
    "serialize_action",
]

BANNER_PREFIX = "Asterisk Call Manager/"
_END_COMMAND = "--END COMMAND--"
_FOLLOWS_HEADERS = frozenset({"Privilege", "ActionID"})
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20


class AmiProtocolError(Exception):
    """The peer sent something that cannot be AMI (for instance an endless line)."""


class AmiMessage:
    """One AMI message: its headers in order, looked up case-insensitively.

    `get` and `[]` return the first value of a header; `get_all` returns every value of a
    repeated one. Messages compare equal when their header lists are equal.
    """

    __slots__ = ("_index", "headers")

    def __init__(self, headers: Iterable[tuple[str, str]]) -> None:
        self.headers: list[tuple[str, str]] = list(headers)
        self._index: dict[str, str] | None = None

    def _lookup(self) -> dict[str, str]:
        index = self._index
        if index is None:
            # Reversed so that the first occurrence of a repeated header wins.
            index = {name.lower(): value for name, value in reversed(self.headers)}
            self._index = index
        return index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header `name` (any case), or `default`."""
        return self._lookup().get(name.lower(), default)

    def value(self, name: str) -> str:
        """The first value of header `name`, `""` when it is absent."""
        return self._lookup().get(name.lower(), "")

    def get_all(self, name: str) -> list[str]:
        """Every value of header `name`, in order (repeated headers such as `ChanVariable`)."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def __getitem__(self, name: str) -> str:
        try:
            return self._lookup()[name.lower()]
        except KeyError:
            raise KeyError(name) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self.headers)

    @property
    def event(self) -> str | None:
        """The `Event` name, None for responses."""
        headers = self.headers
        # Asterisk always puts Event first; the lookup covers anything else.
        if headers and headers[0][0] == "Event":
            return headers[0][1]
        return self.get("Event")

    @property
    def response(self) -> str | None:
        """The `Response` value (`Success`, `Error`, `Goodbye`, ...), None for events."""
        headers = self.headers
        if headers and headers[0][0] == "Response":
            return headers[0][1]
        return self.get("Response")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AmiMessage):
            return NotImplemented
        return self.headers == other.headers

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AmiMessage({self.headers!r})"


class AmiParser:
    """Incremental AMI parser: `feed` any chunk of bytes, get the messages it completed.

    Chunks may split a message, a line or a UTF-8 sequence anywhere. The work is linear in
    the input: each byte is scanned a bounded number of times, whatever the chunking.
    `banner` holds the greeting line once seen (`Asterisk Call Manager/11.0.0`).
    """

    def __init__(self, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.banner: str | None = None
        self._max = max_message_size
        self._first_line = True
        self._tail: list[bytes] = []
        self._tail_size = 0
        self._headers: list[tuple[str, str]] = []
        self._size = 0
        self._follows = False
        self._output_started = False

    @property
    def version(self) -> str | None:
        """The AMI version from the banner (`11.0.0`), None before it arrived."""
        if self.banner is None:
            return None
        return self.banner[len(BANNER_PREFIX) :]

    def feed(self, data: bytes) -> list[AmiMessage]:
        """Consume `data`; return the messages it completed, in order."""
        end = data.rfind(b"\n")
        if end < 0:
            if data:
                self._tail.append(data)
                self._tail_size += len(data)
                if self._tail_size > self._max:
                    raise AmiProtocolError(f"line longer than {self._max} bytes")
            return []
        if self._tail:
            self._tail.append(data[:end])
            block = b"".join(self._tail)
            self._tail = []
            self._tail_size = 0
        else:
            block = data[:end]
        rest = data[end + 1 :]
        if rest:
            self._tail.append(rest)
            self._tail_size = len(rest)
        # Only whole lines are decoded, so a UTF-8 sequence is never cut in two.
        return self._lines(block.decode("utf-8", "replace").split("\n"))

    def _lines(self, lines: Sequence[str]) -> list[AmiMessage]:
        out: list[AmiMessage] = []
        headers = self._headers
        size = self._size
        for line in lines:
            if line and line[-1] == "\r":
                line = line[:-1]
            if self._follows:
                if line.endswith(_END_COMMAND):
                    self._follows = False
                    line = line[: -len(_END_COMMAND)]
                    if not line:
                        continue
                name, colon, value = line.partition(": ")
                if colon and not self._output_started and name in _FOLLOWS_HEADERS:
                    headers.append((name, value))
                else:
                    self._output_started = True
                    headers.append(("Output", line))
            elif not line:
                if headers:
                    out.append(AmiMessage(headers))
                    headers = []
                    size = 0
                continue
            elif self._first_line and not headers and line.startswith(BANNER_PREFIX):
                self.banner = line
                self._first_line = False
                continue
            else:
                name, colon, value = line.partition(":")
                if not colon:
                    headers.append(("Output", line))
                else:
                    if value and value[0] == " ":
                        value = value[1:]
                    headers.append((name, value))
                    if value == "Follows" and name == "Response":
                        self._follows = True
                        self._output_started = False
            self._first_line = False
            size += len(line)
            if size > self._max:
                raise AmiProtocolError(f"message longer than {self._max} characters")
        self._headers = headers
        self._size = size
        return out


def serialize_action(
    action: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    *,
    action_id: str | None = None,
) -> bytes:
    """Encode an action: `Action: X`, `ActionID` (when given), the headers, CRLF CRLF.

    `headers` is a mapping or a sequence of pairs (repeat a name in the sequence for
    repeated headers such as `Variable`). Names and values containing CR or LF are
    refused: they would let a value smuggle in a second action.
    """
    pairs: list[tuple[str, str]] = [("Action", action)]
    if action_id is not None:
        pairs.append(("ActionID", action_id))
    pairs.extend(headers.items() if isinstance(headers, Mapping) else headers)
    lines = []
    for name, value in pairs:
        if not name or ":" in name or _has_newline(name) or name != name.strip():
            raise ValueError(f"invalid AMI header name: {name!r}")
        if _has_newline(value):
            raise ValueError(f"AMI header {name} must not contain CR or LF: {value!r}")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


def _has_newline(text: str) -> bool:
    return "\r" in text or "\n" in text
