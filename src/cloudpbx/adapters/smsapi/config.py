"""SMSAPI accounts in the settings, and the secret that keeps their token out of logs.

An account names where its API token is, never the token itself: an environment variable
(`token_env`) or a file (`token_file`, e.g. a mounted secret). The token is read when the
server builds its gateways, held in a `Secret` whose repr is masked, and sent only in the
`Authorization` header of requests to SMSAPI.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Secret:
    """A credential: `reveal()` gives it; str/repr never do."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SmsapiAccount(BaseModel):
    """One SMSAPI account; its key in `[smsapi.NAME]` is the gateway name PBXes use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_url: str = Field(
        "https://api.smsapi.pl",
        description="Base URL of the API: https://api.smsapi.pl or https://api.smsapi.com",
    )
    token_env: str | None = Field(None, description="Environment variable holding the token")
    token_file: Path | None = Field(None, description="File holding the token")
    sender: str | None = Field(None, description="Sender name (`from`); the account default")
    grosze_per_point: float = Field(
        100.0, ge=0, description="Grosze billed per SMSAPI point the message cost"
    )
    callbacks: bool = Field(True, description="Ask for delivery reports (notify_url)")
    poll: bool = Field(
        False,
        description="Also look statuses up by id, every sms_poll_interval, for messages "
        "without a final status (SMSAPI asks for callbacks and no longer supports this)",
    )

    @model_validator(mode="after")
    def _one_token_source(self) -> SmsapiAccount:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("an SMSAPI account needs exactly one of token_env, token_file")
        return self

    def load_token(self, name: str) -> Secret:
        """The account's token, from its environment variable or file."""
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise ValueError(
                    f"SMSAPI account {name!r}: environment variable {self.token_env} is not set"
                )
            return Secret(value)
        assert self.token_file is not None
        try:
            value = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"SMSAPI account {name!r}: cannot read token file {self.token_file}: {exc.strerror}"
            ) from None
        if not value:
            raise ValueError(f"SMSAPI account {name!r}: token file {self.token_file} is empty")
        return Secret(value)
