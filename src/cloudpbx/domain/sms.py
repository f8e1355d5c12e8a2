"""SMS rules: recipient numbers, message length and parts (GSM-7 vs UCS-2)."""

from __future__ import annotations

import re

# SMSAPI's own limit: its message counter stops at 6 parts (6 × 153 GSM-7 septets, or
# 6 × 67 UCS-2 characters). A longer message would be accepted by nobody down the line.
MAX_PARTS = 6
MAX_GSM7 = MAX_PARTS * 153  # 918
MAX_UCS2 = MAX_PARTS * 67  # 402

# What `to` may look like: digits, optionally `+` first, single spaces or dashes between
# digit groups (`600 100 200`, `+48 600-100-200`). Nothing else: no other whitespace (a
# trailing newline, a tab), no leading or trailing separator. ASCII digits only: `\d`
# would take e.g. Arabic-Indic digits, which no gateway dials.
_RECIPIENT = re.compile(r"\+?[0-9]+(?:[ -][0-9]+)*")
_NUMBER = re.compile(r"(?:\+?48)?([0-9]{9})")

# GSM 03.38 basic character set, and the extension table (each of those costs two septets).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


def normalize_recipient(value: str) -> str | None:
    """A Polish mobile number in international form `48XXXXXXXXX`, or None if invalid.

    Accepts nine digits (the document's form) and, as our decision, `48`/`+48` + nine
    digits; single spaces or dashes between digit groups are ignored.
    """
    if not _RECIPIENT.fullmatch(value):
        return None
    match = _NUMBER.fullmatch(value.replace(" ", "").replace("-", ""))
    return f"48{match.group(1)}" if match else None


def is_gsm7(body: str) -> bool:
    return all(ch in _GSM7_BASIC or ch in _GSM7_EXTENDED for ch in body)


def body_problem(body: str) -> str | None:
    """Why `body` cannot be sent (empty, or longer than SMSAPI's 6 parts), else None."""
    if not body:
        return "body is empty"
    parts = count_parts(body)
    if parts <= MAX_PARTS:
        return None
    alphabet = "GSM-7" if is_gsm7(body) else "UCS-2"
    return (
        f"body needs {parts} SMS parts ({alphabet}); the limit is {MAX_PARTS} parts: "
        f"{MAX_GSM7} GSM-7 or {MAX_UCS2} UCS-2 characters"
    )


def count_parts(body: str) -> int:
    """How many SMS parts the gateway bills for `body`.

    GSM-7: 160 septets in one part, 153 per part when split (extension characters count
    twice). Anything else (Polish diacritics included) is UCS-2: 70 characters in one part,
    67 per part when split.
    """
    if is_gsm7(body):
        length = sum(2 if ch in _GSM7_EXTENDED else 1 for ch in body)
        single, multi = 160, 153
    else:
        length = sum(2 if ord(ch) > 0xFFFF else 1 for ch in body)
        single, multi = 70, 67
    if length <= single:
        return 1
    return -(-length // multi)


def is_test_flag(value: str | None) -> bool:
    """The document: the message is a test if `test` is set and contains the string 'true'."""
    return value is not None and "true" in value
