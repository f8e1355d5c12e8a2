"""The Asterisk backend's pure core: AMI bytes in, contract events and CDR rows out.

Nothing here does I/O; the live AMI connection is a thin shell around these classes:

* :mod:`.framing` — `AmiParser` (bytes → `AmiMessage`) and `serialize_action`;
* :mod:`.tenancy` — `TenantMap`: which PBX a device, channel, queue... belongs to;
* :mod:`.channels` — `CallTracker`: the call state behind Connecting (32) and the
  connected party;
* :mod:`.translate` — `Translator`: AMI messages → `(pbx, [events of one change])`;
* :mod:`.cdr` — `CdrConverter`: `Event: Cdr` → `(pbx, CdrRecord)`, with `RatingTable`.
"""

from cloudpbx.adapters.asterisk.cdr import (
    CdrConverter,
    CdrError,
    Rate,
    Rating,
    RatingTable,
    Tariff,
    cdr_record,
)
from cloudpbx.adapters.asterisk.channels import CallTracker, Channel
from cloudpbx.adapters.asterisk.framing import (
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    serialize_action,
)
from cloudpbx.adapters.asterisk.tenancy import Peer, TenantMap, TenantRule, channel_device
from cloudpbx.adapters.asterisk.translate import Batch, Translator

__all__ = [
    "AmiMessage",
    "AmiParser",
    "AmiProtocolError",
    "Batch",
    "CallTracker",
    "CdrConverter",
    "CdrError",
    "Channel",
    "Peer",
    "Rate",
    "Rating",
    "RatingTable",
    "Tariff",
    "TenantMap",
    "TenantRule",
    "Translator",
    "cdr_record",
    "channel_device",
    "serialize_action",
]
