"""Python client for the CloudPBX API 1.3: REST calls, downloads and the event stream.

Works against any server that speaks the contract (docs/client.md)::

    from cloudpbx.client import Client

    with Client("https://api.cloudpbx.pl", "KEY", pbx="MojaCentrala") as pbx:
        for row in pbx.iter_cdr("2026-03-01", "2026-03-31"):
            print(row.calldate, row.src, "→", row.dst, row.billsec)
        for event_id, event in pbx.events():
            print(event_id, event)

Everything public is importable from here; the underscored modules are private.
"""

from cloudpbx.client._backoff import NO_RETRY, RetryPolicy, backoff
from cloudpbx.client._client import AsyncClient, Client
from cloudpbx.client._describe import describe, device_label, member_label, sms_label
from cloudpbx.client._events import (
    ConferenceMemberEvent,
    Event,
    ExtStatusEvent,
    Message,
    QueueEvent,
    QueueMemberEvent,
    SmsStatusEvent,
    SubscriberEvent,
    UnknownEvent,
    channel_extension,
    extension,
    parse_event,
    parse_message,
)
from cloudpbx.client._exceptions import (
    ActionError,
    APIError,
    AuthError,
    BadRequest,
    CloudPBXError,
    Forbidden,
    NotFound,
    ProtocolError,
    RequestInfo,
    ServerError,
    SmsError,
    TransportError,
    TruncatedError,
)
from cloudpbx.client._models import (
    CdrRow,
    DialResult,
    Download,
    Page,
    Recording,
    SmsResponse,
    Transcription,
    TranscriptionItem,
)
from cloudpbx.client._pbxstate import ExtensionView, PbxState
from cloudpbx.client._states import DeviceState, Lang, MemberStatus, SmsStatus
from cloudpbx.client._stream import AsyncEventStream, EventStream
from cloudpbx.client._types import DateLike, Destination, ProgressCallback

__all__ = [
    "NO_RETRY",
    "APIError",
    "ActionError",
    "AsyncClient",
    "AsyncEventStream",
    "AuthError",
    "BadRequest",
    "CdrRow",
    "Client",
    "CloudPBXError",
    "ConferenceMemberEvent",
    "DateLike",
    "Destination",
    "DeviceState",
    "DialResult",
    "Download",
    "Event",
    "EventStream",
    "ExtStatusEvent",
    "ExtensionView",
    "Forbidden",
    "Lang",
    "MemberStatus",
    "Message",
    "NotFound",
    "Page",
    "PbxState",
    "ProgressCallback",
    "ProtocolError",
    "QueueEvent",
    "QueueMemberEvent",
    "Recording",
    "RequestInfo",
    "RetryPolicy",
    "ServerError",
    "SmsError",
    "SmsResponse",
    "SmsStatus",
    "SmsStatusEvent",
    "SubscriberEvent",
    "Transcription",
    "TranscriptionItem",
    "TransportError",
    "TruncatedError",
    "UnknownEvent",
    "backoff",
    "channel_extension",
    "describe",
    "device_label",
    "extension",
    "member_label",
    "parse_event",
    "parse_message",
    "sms_label",
]
