"""Configuration: a TOML file and/or `CLOUDPBX_*` environment variables.

Precedence (highest first): environment variables, the TOML file named by `--config` or
`CLOUDPBX_CONFIG`, defaults. See docs/configuration.md.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the server, with the defaults of the embedded set-up."""

    model_config = SettingsConfigDict(env_prefix="CLOUDPBX_", extra="forbid")

    data_dir: Path = Field(Path("cloudpbx-data"), description="Recordings and the SQLite file")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite in data_dir")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    backend: str = Field("simulator", description="PBX backend: 'simulator' or 'none'")
    sms_gateway: str = Field("simulator", description="SMS gateway: 'simulator' or 'none'")
    sms_price_per_part: int = Field(16, ge=0, description="Grosze billed per SMS part")
    sms_simulator_step: float = Field(1.0, ge=0, description="Seconds between SMS statuses")
    cdr_cap: int = Field(10_000, ge=1, description="Most CDR rows one /cdr returns")
    record_cap: int = Field(5_000, ge=1, description="Most rows one /record returns")
    transcription_cap: int = Field(10_000, ge=1, description="Most rows one /transcription returns")
    ws_history_size: int = Field(10_000, ge=1, description="Messages kept per PBX for resume")
    ws_buffer_size: int = Field(1_000, ge=1, description="Messages queued per connection")
    ws_ping_interval: float = Field(20.0, gt=0, description="Seconds between server pings")
    ws_ping_timeout: float = Field(20.0, gt=0, description="Seconds to wait for a pong")
    simulator_seed: int | None = None
    simulator_rate: float = Field(
        0.15, ge=0, description="New simulated calls per second per PBX (0: only /dial)"
    )
    simulator_speed: float = Field(
        1.0, gt=0, description="Time compression of simulated calls (ring/talk / speed)"
    )
    simulator_backfill_days: int = Field(7, ge=0)
    log_level: str = "info"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'cloudpbx.db').resolve()}"

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < TOML file < environment < explicit overrides (CLI flags)."""
    path = config_file or (Path(p) if (p := os.environ.get("CLOUDPBX_CONFIG")) else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        with path.open("rb") as handle:
            file_values = tomllib.load(handle)
    env_values = Settings().model_dump(exclude_unset=True)
    merged = {**file_values, **env_values, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings(**merged)
