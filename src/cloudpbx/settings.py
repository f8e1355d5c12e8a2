"""Configuration: a TOML file and/or `CLOUDPBX_*` environment variables.

Precedence (highest first): environment variables, the TOML file named by `--config` or
`CLOUDPBX_CONFIG`, defaults. See docs/configuration.md.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloudpbx.adapters.smsapi.config import SmsapiAccount


class Settings(BaseSettings):
    """Every knob of the server, with the defaults of the embedded set-up."""

    # hide_input_in_errors: a refused value may hold a secret (a URL with credentials, an
    # API key); the message names the setting and the problem.
    model_config = SettingsConfigDict(
        env_prefix="CLOUDPBX_", extra="forbid", hide_input_in_errors=True
    )

    data_dir: Path = Field(Path("cloudpbx-data"), description="Recordings and the SQLite file")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite in data_dir")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(
        1, ge=1, le=256, description="Server processes on one port (>1: PostgreSQL + engine)"
    )
    lease_ttl: float = Field(
        10.0, ge=0.3, le=300, description="Seconds an AMI connector's lease lasts unrenewed"
    )
    backend: str = Field("simulator", description="PBX backend: 'simulator', 'asterisk' or 'none'")
    asterisk_config: Path | None = Field(
        None, description="TOML file of the Asterisk backend: servers, PBXes, rating"
    )
    sms_gateway: str = Field("simulator", description="SMS gateway: 'simulator' or 'none'")
    sms_price_per_part: int = Field(16, ge=0, description="Grosze billed per SMS part")
    sms_simulator_step: float = Field(1.0, ge=0, description="Seconds between SMS statuses")
    # SMSAPI accounts and the outbox (docs/sms.md). A PBX uses an account by naming it
    # as its SMS gateway (`pbx add --sms-gateway NAME`).
    smsapi: dict[str, SmsapiAccount] = Field(
        default_factory=dict, description="SMSAPI accounts by gateway name"
    )
    sms_callback_base_url: str = Field(
        "", description="Public URL SMSAPI reaches this server at; empty: poll only"
    )
    sms_callback_secret_file: Path | None = Field(
        None, description="Key of the callback URL tokens; default data_dir/sms-callback.key"
    )
    sms_submit_timeout: float = Field(10.0, gt=0, description="Seconds one submission may take")
    sms_retry_base: float = Field(2.0, gt=0, description="First retry delay (doubles)")
    sms_retry_max: float = Field(300.0, gt=0, description="Longest retry delay")
    sms_retry_deadline: float = Field(3600.0, gt=0, description="Seconds to keep retrying")
    sms_poll_interval: float = Field(
        3600.0, gt=0, description="Seconds between status lookups of an SMSAPI message"
    )
    sms_report_max_age: float = Field(
        259_200.0, gt=0, description="Seconds without a final status before UNKNOWN"
    )
    sms_dispatch_interval: float = Field(1.0, gt=0, description="Seconds between outbox rounds")
    cdr_cap: int = Field(10_000, ge=1, description="Most CDR rows one /cdr returns")
    record_cap: int = Field(5_000, ge=1, description="Most rows one /record returns")
    transcription_cap: int = Field(10_000, ge=1, description="Most rows one /transcription returns")
    # Transcription of recordings: engines, summaries, the job queue (docs/transcription.md).
    transcription_engine: str = Field(
        "pocketsphinx", description="Engine: 'pocketsphinx', 'whisper', 'openai' or 'none'"
    )
    transcription_engines: dict[str, str] = Field(
        default_factory=dict, description="Engine per PBX name, overriding transcription_engine"
    )
    transcription_language: str = Field("", description="Language hint (e.g. 'pl'); '': detect")
    transcription_workers: int = Field(0, ge=0, description="Workers inside the API process")
    transcription_lease: float = Field(60.0, ge=1, description="Seconds a claim lasts unrenewed")
    transcription_max_attempts: int = Field(5, ge=1, description="Attempts before a job fails")
    transcription_retry_delay: float = Field(30.0, gt=0, description="First retry delay (doubles)")
    transcription_retry_max: float = Field(3600.0, gt=0, description="Longest retry delay")
    transcription_poll_interval: float = Field(2.0, gt=0, description="Seconds between queue polls")
    transcription_nice: int = Field(
        10, ge=0, le=19, description="Niceness of `cloudpbx worker` processes (API first)"
    )
    pocketsphinx_hmm: Path | None = Field(None, description="Acoustic model folder; default en-us")
    pocketsphinx_lm: Path | None = Field(None, description="Language model; default en-us")
    pocketsphinx_dict: Path | None = Field(None, description="Pronunciation dictionary")
    whisper_model_dir: Path | None = Field(None, description="CTranslate2 Whisper model folder")
    whisper_device: str = Field("cpu", description="'cpu', 'cuda' or 'auto'")
    whisper_compute_type: str = Field("int8", description="CTranslate2 compute type")
    whisper_beam_size: int = Field(5, ge=1)
    whisper_cpu_threads: int = Field(0, ge=0, description="0: CTranslate2's default")
    whisper_vad: bool = Field(True, description="Skip silence with faster-whisper's VAD")
    openai_url: str = Field("", description="Base URL of an OpenAI-compatible server, '/v1' incl.")
    openai_api_key: str = Field("", description="Bearer token for openai_url ('' for none)")
    openai_model: str = Field("whisper-1", description="Model name sent to /audio/transcriptions")
    openai_timeout: float = Field(300.0, gt=0, description="Seconds one request may take")
    openai_chunk_seconds: float = Field(600.0, ge=30, description="Longest audio per request")
    summariser: str = Field("extractive", description="'extractive', 'openai' or 'none'")
    summary_sentences: int = Field(3, ge=1, description="Sentences an extractive summary keeps")
    summary_url: str = Field("", description="OpenAI-compatible base URL; '' = openai_url")
    summary_api_key: str = Field("", description="Bearer token; '' = openai_api_key")
    summary_model: str = Field("gpt-4o-mini", description="Model for /chat/completions")
    summary_prompt: str = Field("", description="System prompt; '' = the documented default")
    summary_timeout: float = Field(120.0, gt=0, description="Seconds one request may take")
    ws_history_size: int = Field(10_000, ge=1, description="Messages kept per PBX for resume")
    ws_buffer_size: int = Field(
        1_000,
        ge=1,
        description="Messages a connection may fall behind (kept while it resumes); "
        "with ws_buffer_bytes unset, also sets its write limit to this many KiB",
    )
    ws_buffer_bytes: int | None = Field(
        None, ge=1, description="Unsent bytes past which a client is too slow (4008)"
    )
    ws_ping_interval: float = Field(
        2.5, gt=0, description="Seconds a connection may go without data before a ping"
    )
    ws_ping_timeout: float = Field(20.0, gt=0, description="Seconds to wait for a pong")
    ws_bundle_events: bool = Field(
        False, description="Several event types of one change in one message (opt-in)"
    )
    ws_commit_interval: float = Field(
        0.005, gt=0, le=1, description="Seconds a group commit gathers messages before storing"
    )
    # The event engine (docs/operations.md, "Event engine"): '' keeps the stream in this
    # process; a nats:// URL shares it between server processes (PostgreSQL required).
    event_engine_url: str = Field(
        "", description="NATS JetStream URL (nats://host:4222); '': in-process stream"
    )
    event_engine_stream: str = Field(
        "CLOUDPBX_EVENTS",
        pattern=r"[A-Za-z0-9_-]{1,64}",
        description="JetStream stream holding every PBX's messages",
    )
    event_engine_history: int = Field(
        1_000, ge=1, description="Messages per PBX the engine keeps for resume"
    )
    event_engine_timeout: float = Field(
        2.0, gt=0, description="Seconds to wait for the engine before retrying"
    )
    simulator_seed: int | None = None
    simulator_rate: float = Field(
        0.15, ge=0, description="New simulated calls per second per PBX (0: only /dial)"
    )
    simulator_speed: float = Field(
        1.0, gt=0, description="Time compression of simulated calls (ring/talk / speed)"
    )
    simulator_backfill_days: int = Field(7, ge=0)
    log_level: str = "info"
    # HTTP hardening (docs/configuration.md, "HTTP limits and security").
    http_max_head_bytes: int = Field(16_384, ge=1024, description="Request line + headers (431)")
    http_max_headers: int = Field(100, ge=8, description="Header lines per request (431)")
    http_head_timeout: float = Field(
        10.0, gt=0, description="Seconds to send the request head, else the connection closes"
    )
    http_keep_alive_timeout: int = Field(
        5, ge=1, description="Seconds an idle keep-alive connection stays open"
    )
    http_max_form_bytes: int = Field(
        16_384, ge=1024, description="Body of /sendSMS and SMS callbacks (413)"
    )
    auth_fail_limit: int = Field(
        30, ge=1, description="Failed authentications per address per window, then 429"
    )
    auth_fail_window: float = Field(60.0, gt=0, description="Seconds of auth_fail_limit")
    auth_cache_ttl: float = Field(
        2.0,
        ge=0,
        le=60,
        description="Seconds a valid API key is trusted without a database read: how long a "
        "key revoked by another process keeps working here; 0 reads the key every request",
    )
    trusted_proxies: str = Field(
        "", description="Comma-separated proxy addresses/CIDRs whose X-Forwarded-For counts"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed cross-origin; empty: CORS off"
    )
    metrics_token: str = Field(
        "", description="Bearer token for /metrics; '': loopback clients only (docs/operations.md)"
    )
    metrics_interval: float = Field(
        1.0, gt=0, description="Seconds between copies of the in-memory counters into /metrics"
    )
    metrics_queue_interval: float = Field(
        10.0, gt=0, description="Seconds between the database reads of the SMS and job queues"
    )

    @model_validator(mode="after")
    def _engine_needs_shared_database(self) -> Settings:
        url = self.event_engine_url
        if url and not url.startswith(("nats://", "tls://")):
            raise ValueError(f"event_engine_url must be a nats:// URL, got {url.split('@')[-1]!r}")
        if url and not self.effective_database_url.startswith("postgres"):
            raise ValueError(
                "event_engine_url needs PostgreSQL (database_url = postgresql://...): "
                "several processes share the event stream, and SQLite is one process's file"
            )
        return self

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
