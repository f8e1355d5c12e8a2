"""SMS rules: recipient numbers, message length and parts (GSM-7 vs UCS-2)."""

from __future__ import annotations

import re

MAX_BODY = 1024

# ASCII digits only: `\d` would take e.g. Arabic-Indic digits, which no gateway dials.
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
    digits; spaces and dashes inside the number are ignored.
    """
    compact = re.sub(r"[\s-]", "", value)
    match = _NUMBER.fullmatch(compact)
    return f"48{match.group(1)}" if match else None


def is_gsm7(body: str) -> bool:
    return all(ch in _GSM7_BASIC or ch in _GSM7_EXTENDED for ch in body)


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
