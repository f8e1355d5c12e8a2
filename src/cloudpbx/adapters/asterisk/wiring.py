"""Building the Asterisk backend from the server's settings (used by `server.py`)."""

from __future__ import annotations

import logging

from cloudpbx.adapters.asterisk.backend import AsteriskBackend
from cloudpbx.adapters.asterisk.config import ConfigError, load_config
from cloudpbx.adapters.asterisk.ledger import StoreLedger
from cloudpbx.runtime import Runtime

__all__ = ["asterisk_backend"]

log = logging.getLogger(__name__)


async def asterisk_backend(runtime: Runtime) -> AsteriskBackend:
    """The backend `settings.asterisk_config` describes; `ConfigError` when it is unusable.

    PBXes of the configuration that are not in the database are served anyway (their
    events are refused by the sink, and logged, until `cloudpbx pbx create` adds them).
    """
    settings = runtime.settings
    if settings.asterisk_config is None:
        raise ConfigError(
            "backend 'asterisk' needs asterisk_config (CLOUDPBX_ASTERISK_CONFIG): "
            "a TOML file naming the Asterisk servers and their PBXes"
        )
    config = load_config(settings.asterisk_config)
    known = {tenant.name for tenant in await runtime.tenants.list()}
    for pbx in config.pbxes:
        if pbx not in known:
            log.warning("PBX %s of %s is not in the database", pbx, settings.asterisk_config)
    return AsteriskBackend(
        config,
        state_dir=settings.data_dir / "asterisk",
        ledger=StoreLedger(runtime.engine, runtime.tenants),
        elect=runtime.elect,
    )
