"""Callback URLs for SMSAPI's delivery reports: `{base}/callbacks/smsapi/{pbx}/{token}`.

The token is an HMAC-SHA256 of the PBX's name under a server key, so it is unguessable,
needs no storage, and is checked in constant time before the database is asked anything.
The key lives in a file (`sms_callback_secret_file`, default `data_dir/sms-callback.key`),
created with mode 0600 at first use; replacing it invalidates every callback URL handed
out before (reports for those messages then come by polling). Servers that share a
database must share the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import quote

CALLBACK_PREFIX = "/callbacks/smsapi"
_CONTEXT = b"cloudpbx smsapi delivery reports\x00"


def load_or_create_key(path: Path) -> bytes:
    """The key in `path` (hex text), created with 256 random bits when missing."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_or_create_key(path)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text + "\n")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"SMS callback key {path} is not hex text") from None
    if len(key) < 16:
        raise ValueError(f"SMS callback key {path} is shorter than 128 bits")
    return key


class CallbackSigner:
    """Makes and checks the per-PBX callback tokens; the key is read at first use.

    `base_url` is the server's public URL as SMSAPI reaches it (may be set after start,
    once the address is known); empty: no `notify_url` is sent, statuses come by polling.
    """

    def __init__(self, key_file: Path, base_url: str = "") -> None:
        self._key_file = key_file
        self._key: bytes | None = None
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"CallbackSigner(key_file={str(self._key_file)!r}, base_url={self.base_url!r})"

    def _secret(self) -> bytes:
        if self._key is None:
            self._key = load_or_create_key(self._key_file)
        return self._key

    def token(self, pbx: str) -> str:
        digest = hmac.new(self._secret(), _CONTEXT + pbx.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def verify(self, pbx: str, token: str) -> bool:
        expected = self.token(pbx).encode("ascii")
        return hmac.compare_digest(expected, token.encode("utf-8", "surrogatepass"))

    def path(self, pbx: str) -> str:
        return f"{CALLBACK_PREFIX}/{quote(pbx, safe='')}/{self.token(pbx)}"

    def url(self, pbx: str) -> str | None:
        """The notify_url for a PBX's messages, None when no public URL is configured."""
        if not self.base_url:
            return None
        return self.base_url.rstrip("/") + self.path(pbx)
