"""The client's exceptions. Every failure a caller can meet is one of these::

    CloudPBXError
    ├── TransportError       the server could not be reached, or the connection broke
    ├── ProtocolError        the server answered something the contract does not allow
    ├── TruncatedError       one day holds more rows than the server returns at once
    └── APIError             the server answered with an error status
        ├── BadRequest       400: a parameter is missing or malformed
        ├── AuthError        401: no key, unknown or revoked key
        ├── Forbidden        403: the key's PBX is another one, or the PBX has no SMS gateway
        ├── NotFound         404: no such call, recording, transcription or PBX channel
        ├── ActionError      /dial answered `Action Error` (500): the PBX refused the call
        ├── SmsError         /sendSMS answered 500: the gateway failed (`response` says why)
        └── ServerError      any other 5xx

httpx and websockets exceptions never escape: they are translated once, where the client
talks to the network, and chained (`raise ... from exc`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudpbx.client._models import SmsResponse


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The request that failed: method and URL, with the API key removed from the URL."""

    method: str
    url: str

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


class CloudPBXError(Exception):
    """Base class of every exception the client raises."""

    def __init__(self, message: str, *, request: RequestInfo | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class TransportError(CloudPBXError):
    """No answer: connection refused or reset, timeout, TLS failure, broken stream."""


class ProtocolError(CloudPBXError):
    """The server's answer does not follow the contract (e.g. a list that is not a list)."""


class TruncatedError(CloudPBXError):
    """A single day has more rows than the server returns in one response.

    The contract's ranges are whole days, so such a day cannot be split further;
    `total` is what the server counted, `received` what it returned.
    """

    def __init__(
        self, message: str, *, total: int | None, received: int, request: RequestInfo | None
    ) -> None:
        super().__init__(message, request=request)
        self.total = total
        self.received = received


class APIError(CloudPBXError):
    """The server answered with an error status.

    `status` is the HTTP status, `message` the server's own words (the `error` field of a
    JSON error, or the plain-text body), `code` the JSON error's slug when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        request: RequestInfo | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.status = status
        self.code = code

    def __str__(self) -> str:
        where = f" on {self.request}" if self.request is not None else ""
        code = f" ({self.code})" if self.code else ""
        return f"{self.status}{where}: {self.message}{code}"


class BadRequest(APIError):
    """400: a parameter is missing or malformed (the message names it)."""


class AuthError(APIError):
    """401: the API key is missing, unknown or revoked."""


class Forbidden(APIError):
    """403: the key belongs to another PBX, or the PBX has no SMS gateway."""


class NotFound(APIError):
    """404: no such call, recording, transcription, endpoint or PBX channel."""


class ActionError(APIError):
    """`/dial` answered `Action Error`: the PBX did not accept the call."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        request: RequestInfo | None = None,
        originate_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request=request)
        self.originate_id = originate_id


class SmsError(APIError):
    """`/sendSMS` answered 500: the gateway failed; `response` is the server's object."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        response: SmsResponse,
        request: RequestInfo | None = None,
    ) -> None:
        super().__init__(message, status=status, code=None, request=request)
        self.response = response


class ServerError(APIError):
    """A 5xx other than the documented ones: retried for idempotent calls, then raised."""
