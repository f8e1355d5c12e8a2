"""The Asterisk backend's configuration: servers, the PBXes each serves, rating.

Read from a TOML file (`asterisk_config` in the server's settings); see docs/asterisk.md
for a complete example. Unknown keys are errors, like in the main settings.

    [[servers]]
    name = "ast1"
    host = "127.0.0.1"
    port = 5038
    username = "api"
    secret = "apisecret"
    timezone = "UTC"                 # the zone Asterisk writes CDR times in

    [servers.recordings]
    dir = "/var/spool/asterisk/monitor"

    [servers.cdr_csv]
    path = "/var/log/asterisk/cdr-csv/Master.csv"

    [[servers.pbx]]
    name = "MojaCentrala"
    queues = ["Kolejka1"]
    conferences = ["SesjaRady"]

    [rating.prefixes]
    "48" = { zone = "Polska", per_minute = 20 }
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloudpbx.adapters.asterisk.cdr import RatingTable, Tariff
from cloudpbx.adapters.asterisk.connection import ConnectionOptions
from cloudpbx.adapters.asterisk.tenancy import TenantMap, TenantRule

__all__ = [
    "AsteriskConfig",
    "CdrCsvConfig",
    "ConfigError",
    "PbxConfig",
    "RatingConfig",
    "RecordingsConfig",
    "ServerConfig",
    "load_config",
]

_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class ConfigError(ValueError):
    """The Asterisk configuration file is missing or invalid (the message says where)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


class TariffConfig(_Model):
    zone: str = Field(min_length=1, max_length=64)
    per_minute: int = Field(ge=0, description="Grosze per started minute")


class RatingConfig(_Model):
    """Number prefix → zone and price; the longest prefix wins; short numbers are internal."""

    min_digits: int = Field(7, ge=1)
    prefixes: dict[str, TariffConfig] = Field(default_factory=dict)

    @field_validator("prefixes")
    @classmethod
    def _digits(cls, value: dict[str, TariffConfig]) -> dict[str, TariffConfig]:
        for prefix in value:
            if not prefix.isdigit():
                raise ValueError(f"rating prefix must be digits: {prefix!r}")
        return value

    def table(self) -> RatingTable:
        return RatingTable(
            {p: Tariff(t.zone, t.per_minute) for p, t in self.prefixes.items()},
            min_digits=self.min_digits,
        )


class PbxConfig(_Model):
    """One PBX (tenant) on an Asterisk server, and the names its objects use there."""

    name: str = Field(pattern=_NAME)
    endpoint_prefix: str | None = Field(None, description="Default '<name>-'")
    endpoint_tech: str = Field("PJSIP", description="Channel technology for /dial")
    context: str | None = Field(None, description="Dialplan context of /dial; default <name>")
    account_codes: list[str] | None = None
    contexts: list[str] | None = None
    context_prefixes: list[str] | None = None
    queues: list[str] = Field(default_factory=list)
    queue_prefixes: list[str] | None = None
    conferences: list[str] = Field(default_factory=list)
    conference_prefixes: list[str] | None = None
    extensions: list[str] | None = Field(
        None, description="Valid cpa values; default: learned from Asterisk's hints/devices"
    )
    callerid: str = Field(
        '"{pbx} {cpa}" <{cpa}>',
        description="CallerID of a /dial's first leg ({pbx}, {cpa}, {cpb}); keeps src = cpa",
    )
    account: str | None = Field(None, description="Originate's Account (default: the endpoint's)")
    originate_timeout: float = Field(30.0, gt=0, description="Seconds cpa may ring")
    rating: RatingConfig | None = Field(None, description="This PBX's own tariff")

    def rule(self) -> TenantRule:
        def frozen(values: list[str] | None) -> frozenset[str] | None:
            return None if values is None else frozenset(values)

        def tupled(values: list[str] | None) -> tuple[str, ...] | None:
            return None if values is None else tuple(values)

        return TenantRule(
            self.name,
            endpoint_prefix=self.endpoint_prefix,
            account_codes=frozen(self.account_codes),
            contexts=frozen(self.contexts),
            context_prefixes=tupled(self.context_prefixes),
            queues=frozenset(self.queues),
            queue_prefixes=tupled(self.queue_prefixes),
            conferences=frozenset(self.conferences),
            conference_prefixes=tupled(self.conference_prefixes),
        )

    @property
    def dial_context(self) -> str:
        return self.context or self.name


class RecordingsConfig(_Model):
    """Where MixMonitor writes (a folder this server can read: local, NFS, a mounted
    bucket) and how finished files get into the PBX's recordings folder."""

    dir: Path
    name: str = Field("{uniqueid}.wav", description="File name MixMonitor uses")
    mode: Literal["link", "copy", "move"] = Field(
        "link", description="Hard link (copy across file systems), copy, or move"
    )
    settle: float = Field(0.3, gt=0, description="Seconds a file must stay unchanged")
    wait: float = Field(10.0, gt=0, description="Seconds to wait for the file after hangup")
    min_size: int = Field(45, ge=0, description="Smaller files (44-byte header) are ignored")


class CdrCsvConfig(_Model):
    """cdr_csv's Master.csv, read on every (re)connect to import what AMI did not deliver."""

    path: Path
    timezone: str = Field("UTC", description="UTC with usegmtime=yes, else Asterisk's zone")
    start: Literal["beginning", "end"] = Field(
        "beginning", description="First run: import the whole file, or only what follows"
    )
    interval: float = Field(
        300.0, ge=0, description="Seconds between catch-ups while connected (0: only on connect)"
    )

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        return _zone(value)


class ServerConfig(_Model):
    """One Asterisk server (AMI) and the PBXes it serves."""

    name: str = Field(pattern=_NAME)
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    timezone: str = Field("UTC", description="Asterisk's local zone (Cdr StartTime)")
    events: str = Field("system,call,agent,cdr", description="Login Events filter")
    connect_timeout: float = Field(5.0, gt=0)
    action_timeout: float = Field(5.0, gt=0)
    ping_interval: float = Field(10.0, gt=0)
    ping_timeout: float = Field(5.0, gt=0)
    reconnect_min: float = Field(0.5, gt=0)
    reconnect_max: float = Field(30.0, gt=0)
    auth_retry: float = Field(60.0, ge=0, description="Retry a refused login (0: never)")
    flush_delay: float = Field(0.005, ge=0, description="Seconds events are gathered")
    recordings: RecordingsConfig | None = None
    cdr_csv: CdrCsvConfig | None = None
    pbx: list[PbxConfig] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        return _zone(value)

    @field_validator("secret", "username", "events")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("must be one line")
        return value

    def options(self) -> ConnectionOptions:
        return ConnectionOptions(
            connect_timeout=self.connect_timeout,
            action_timeout=self.action_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            reconnect_min=self.reconnect_min,
            reconnect_max=max(self.reconnect_max, self.reconnect_min),
            auth_retry=self.auth_retry,
            events=self.events,
        )

    def tenants(self) -> TenantMap:
        return TenantMap(p.rule() for p in self.pbx)


class AsteriskConfig(_Model):
    servers: list[ServerConfig] = Field(min_length=1)
    rating: RatingConfig = Field(default_factory=RatingConfig)

    @model_validator(mode="after")
    def _unique(self) -> AsteriskConfig:
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError("server names must be unique")
        pbxes = [p.name for s in self.servers for p in s.pbx]
        dupes = sorted({p for p in pbxes if pbxes.count(p) > 1})
        if dupes:
            raise ValueError(f"a PBX is served by one server only: {', '.join(dupes)}")
        for server in self.servers:
            server.tenants()  # two PBXes claiming one name is an error now, not at runtime
        return self

    @property
    def pbxes(self) -> list[str]:
        return [p.name for s in self.servers for p in s.pbx]


def load_config(path: Path) -> AsteriskConfig:
    """Read and validate the TOML file; `ConfigError` with a readable message."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, source=str(path))


def parse_config(data: object, *, source: str = "asterisk config") -> AsteriskConfig:
    try:
        return AsteriskConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
