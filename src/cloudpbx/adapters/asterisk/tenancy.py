"""Which PBX (tenant) an AMI event belongs to.

One Asterisk serves many PBXes; nothing in AMI names the tenant, so it is read from the
names the tenant's configuration uses:

* SIP endpoints (peers) named `<prefix><extension>`, by default `MojaCentrala-101`;
  channels are `PJSIP/MojaCentrala-101-00000001`, devices `PJSIP/MojaCentrala-101`;
* the endpoint's `accountcode` (`AccountCode`, also in `Event: Cdr`);
* the dialplan contexts (`MojaCentrala`, `MojaCentrala-...`);
* queue and conference names the PBX owns (listed, or by prefix).

A name that matches no rule belongs to no PBX: callers drop the event, so nothing ever
reaches another tenant by default. When several prefixes match, the longest one wins
(tenants `Moja` and `Moja-Centrala` can coexist).

The contract's peer name is always `<PBX>-<extension>` (`peer_name`), whatever the
endpoint prefix is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from cloudpbx.domain.events import peer_name

__all__ = ["ENDPOINT_TECHS", "Peer", "TenantMap", "TenantRule", "channel_device"]

ENDPOINT_TECHS = frozenset({"PJSIP", "SIP", "IAX2"})
"""Channel technologies whose resources are SIP/IAX endpoints (phones, trunks)."""

_CACHE_LIMIT = 10_000
_HEX = frozenset("0123456789abcdefABCDEF")


class Peer(NamedTuple):
    """An endpoint of a PBX: `name` is the contract's peer (`MojaCentrala-101`)."""

    pbx: str
    name: str
    extension: str


@dataclass(frozen=True, slots=True)
class TenantRule:
    """How to recognise one PBX's objects. Unset fields take the defaults shown.

    - `endpoint_prefix`: `"<pbx>-"`;
    - `account_codes`: `{pbx}`;
    - `contexts` / `context_prefixes`: `{pbx}` / `("<pbx>-",)`;
    - `queues`, `conferences`: none listed; `queue_prefixes`, `conference_prefixes`:
      `("<pbx>-",)`.
    """

    pbx: str
    endpoint_prefix: str | None = None
    account_codes: frozenset[str] | None = None
    contexts: frozenset[str] | None = None
    context_prefixes: tuple[str, ...] | None = None
    queues: frozenset[str] = field(default_factory=frozenset)
    queue_prefixes: tuple[str, ...] | None = None
    conferences: frozenset[str] = field(default_factory=frozenset)
    conference_prefixes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.pbx:
            raise ValueError("TenantRule needs a PBX name")
        dash = f"{self.pbx}-"
        defaults: dict[str, object] = {
            "endpoint_prefix": dash,
            "account_codes": frozenset({self.pbx}),
            "contexts": frozenset({self.pbx}),
            "context_prefixes": (dash,),
            "queue_prefixes": (dash,),
            "conference_prefixes": (dash,),
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if not self.endpoint_prefix:
            raise ValueError("endpoint_prefix must not be empty")


class _Names:
    """Exact names plus longest-prefix lookup, for one kind of object."""

    def __init__(self) -> None:
        self.exact: dict[str, str] = {}
        self.prefixes: dict[str, str] = {}
        self.lengths: list[int] = []

    def add(self, pbx: str, exact: Iterable[str], prefixes: Iterable[str]) -> None:
        for name in exact:
            _claim(self.exact, name, pbx)
        for prefix in prefixes:
            if prefix:
                _claim(self.prefixes, prefix, pbx)
        self.lengths = sorted({len(p) for p in self.prefixes}, reverse=True)

    def lookup(self, name: str) -> str | None:
        pbx = self.exact.get(name)
        if pbx is not None:
            return pbx
        return self.prefix(name)

    def prefix(self, name: str) -> str | None:
        for length in self.lengths:
            if length <= len(name):
                pbx = self.prefixes.get(name[:length])
                if pbx is not None:
                    return pbx
        return None


def _claim(table: dict[str, str], name: str, pbx: str) -> None:
    owner = table.setdefault(name, pbx)
    if owner != pbx:
        raise ValueError(f"{name!r} is claimed by both {owner!r} and {pbx!r}")


class TenantMap:
    """Resolve AMI names to PBXes; every method returns None for "no known PBX"."""

    def __init__(
        self, rules: Iterable[TenantRule], *, endpoint_techs: Iterable[str] = ENDPOINT_TECHS
    ) -> None:
        self.rules = {rule.pbx: rule for rule in rules}
        self.endpoint_techs = frozenset(endpoint_techs)
        self._endpoints = _Names()
        self._prefix_of: dict[str, str] = {}
        self._accounts = _Names()
        self._contexts = _Names()
        self._queues = _Names()
        self._conferences = _Names()
        for rule in self.rules.values():
            assert rule.endpoint_prefix is not None
            self._endpoints.add(rule.pbx, (), (rule.endpoint_prefix,))
            self._prefix_of[rule.pbx] = rule.endpoint_prefix
            self._accounts.add(rule.pbx, rule.account_codes or (), ())
            self._contexts.add(rule.pbx, rule.contexts or (), rule.context_prefixes or ())
            self._queues.add(rule.pbx, rule.queues, rule.queue_prefixes or ())
            self._conferences.add(rule.pbx, rule.conferences, rule.conference_prefixes or ())
        self._device_cache: dict[str, Peer | None] = {}

    @classmethod
    def of(cls, *pbxes: str) -> TenantMap:
        """A map of PBXes that all follow the default naming."""
        return cls(TenantRule(pbx) for pbx in pbxes)

    @property
    def pbxes(self) -> frozenset[str]:
        return frozenset(self.rules)

    def endpoint(self, name: str) -> Peer | None:
        """`MojaCentrala-101` (an endpoint / SIP peer name) → its PBX and extension."""
        pbx = self._endpoints.prefix(name)
        if pbx is None:
            return None
        extension = name[len(self._prefix_of[pbx]) :]
        if not extension:
            return None
        return Peer(pbx, peer_name(pbx, extension), extension)

    def device(self, device: str) -> Peer | None:
        """`PJSIP/MojaCentrala-101` → the endpoint's peer; None for other devices
        (`Queue:...`, `confbridge:...`, `MWI:...`, `CBAnn/...`) and other tenants."""
        cache = self._device_cache
        try:
            return cache[device]
        except KeyError:
            pass
        tech, slash, resource = device.partition("/")
        peer = None
        if slash and tech in self.endpoint_techs and "/" not in resource:
            peer = self.endpoint(resource)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[device] = peer
        return peer

    def is_endpoint(self, name: str) -> bool:
        """A device or channel of an endpoint technology (`PJSIP/...`), whatever its PBX:
        one that no PBX owns is a tenancy drop, unlike `Local/...` or `Queue:...`."""
        tech, slash, _ = name.partition("/")
        return bool(slash) and tech in self.endpoint_techs

    def channel(self, channel: str) -> Peer | None:
        """`PJSIP/MojaCentrala-101-00000001` → the peer of the channel's endpoint."""
        return self.device(channel_device(channel))

    def interface(self, interface: str) -> Peer | None:
        """A queue member's interface: a device, or `Local/<exten>@<context>[/n]`."""
        if interface.startswith("Local/"):
            exten, at, context = interface[6:].partition("@")
            context = context.split("/", 1)[0]
            pbx = self.context(context) if at else None
            if pbx is None or not exten:
                return None
            return Peer(pbx, peer_name(pbx, exten), exten)
        return self.device(interface)

    def account(self, code: str) -> str | None:
        """The PBX whose endpoints carry `accountcode=code`."""
        return self._accounts.exact.get(code)

    def context(self, context: str) -> str | None:
        return self._contexts.lookup(context)

    def queue(self, name: str) -> str | None:
        return self._queues.lookup(name)

    def conference(self, name: str) -> str | None:
        return self._conferences.lookup(name)


def channel_device(channel: str) -> str:
    """The device of a channel name: `PJSIP/MojaCentrala-101-0000000a` →
    `PJSIP/MojaCentrala-101`; `Local/101@ctx-00000001;2` → `Local/101@ctx`.

    Asterisk appends `-%08x` to SIP channel names (and `;1`/`;2` to Local halves); a name
    without that suffix is returned as it is.
    """
    semi = channel.rfind(";")
    if semi > 0:
        channel = channel[:semi]
    dash = channel.rfind("-")
    if dash > 0 and len(channel) - dash == 9 and _HEX.issuperset(channel[dash + 1 :]):
        return channel[:dash]
    return channel
