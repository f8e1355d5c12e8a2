"""The parameters' OpenAPI patterns and the server agree, as a schema-driven tester checks.

Strings are drawn (hypothesis, derandomized) from each pattern of the live /openapi.json
and from near misses; over real HTTP, the server must take every string that matches the
pattern and refuse every string that does not, with a 400 naming the parameter. The same
agreement is checked with many more strings directly on the checks the routes use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cloudpbx.api.routes.params import (
    DATE_PATTERN,
    DIALABLE_PATTERN,
    EXTENSION_PATTERN,
    UNIQUEID_MAX,
    UNIQUEID_PATTERN,
    check_dial,
    check_uniqueid,
)
from cloudpbx.domain.dates import parse_date
from cloudpbx.domain.errors import BadRequest
from tests.conftest import Tenants
from tests.live import LiveServer
from tests.test_api_rest import assert_json_error, http

DRAWN = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

NEAR_MISSES = st.one_of(
    st.text(alphabet="0123456789-._+*#aZ_ \n%\x00٣２", max_size=70),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
    st.from_regex(r"\+?[0-9]{1,12}", fullmatch=True),
)
"""Strings near every pattern: right alphabet, wrong shape; dates that are no date."""

HAND_PICKED = [
    "a..b",
    ".x",
    "-x",
    "_x",
    "x.",
    "x y",
    "١٠١",
    "٢٠٢٦-٠١-٠١",
    "2026-02-30",
    "2024-02-29",
    "0000-01-01",
    "+",
    "+1",
    "++1",
    "*#",
    "1" * 11,
    "1" * 33,
    "1" * 64,
    "1" * 65,
    "101\n",
]
"""Known edges of the rules, tried first."""


def draw(strategy: st.SearchStrategy[str]) -> list[str]:
    """A fixed sample of `strategy` (the same on every run)."""
    found: list[str] = []

    @DRAWN
    @given(strategy)
    def collect(value: str) -> None:
        found.append(value)

    collect()
    return sorted(set(found))


def matching(pattern: str, max_length: int | None = None) -> list[str]:
    strategy = st.from_regex(pattern, fullmatch=True)
    if max_length is not None:
        strategy = strategy.filter(lambda value: len(value) <= max_length)
    return draw(strategy)


def parameter(spec: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    (found,) = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
    return found


async def _spec(server: LiveServer) -> dict[str, Any]:
    async with http(server) as client:
        document: dict[str, Any] = (await client.get("/openapi.json")).json()
    return document


Ask = Callable[[httpx.AsyncClient, str], Any]


async def ask_datestart(client: httpx.AsyncClient, value: str) -> httpx.Response:
    return await client.get("/cdr", params={"datestart": value, "datestop": "9999-12-31"})


async def ask_datestop(client: httpx.AsyncClient, value: str) -> httpx.Response:
    return await client.get("/cdr", params={"datestart": "0001-01-01", "datestop": value})


async def ask_uniqueid(client: httpx.AsyncClient, value: str) -> httpx.Response:
    return await client.get(f"/transcription/{quote(value, safe='')}")


async def ask_cpa(client: httpx.AsyncClient, value: str) -> httpx.Response:
    return await client.get("/dial", params={"cpa": value, "cpb": "+1"})


async def ask_cpb(client: httpx.AsyncClient, value: str) -> httpx.Response:
    return await client.get("/dial", params={"cpa": "1", "cpb": value})


def accepted(response: httpx.Response, refusal: str) -> bool:
    """True when the server took the value; a refusal must be the parameter's own 400.

    A path with a control character matches no route at all: a 404 `not_found`, which
    is a refusal too (still JSON, still no 500).
    """
    if response.status_code == 400:
        assert response.json()["code"] in {refusal, "missing_parameter"}, response.text
        return False
    return response.json().get("code") != "not_found" if response.status_code == 404 else True


CASES = [
    # path, parameter, how to send a value, the code of its refusal, what it answers if taken
    ("/cdr", "datestart", ask_datestart, "invalid_date", 200),
    ("/cdr", "datestop", ask_datestop, "invalid_date", 200),
    ("/transcription/{uniqueid}", "uniqueid", ask_uniqueid, "invalid_uniqueid", 404),
    ("/dial", "cpa", ask_cpa, "invalid_cpa", 500),  # no PBX backend here: Action Error
    ("/dial", "cpb", ask_cpb, "invalid_cpb", 500),
]


@pytest.mark.parametrize(("path", "name", "ask", "refusal", "taken"), CASES, ids=lambda v: None)
async def test_server_takes_exactly_what_the_pattern_declares(
    live: tuple[LiveServer, Tenants],
    path: str,
    name: str,
    ask: Ask,
    refusal: str,
    taken: int,
) -> None:
    server, tenants = live
    declared = parameter(await _spec(server), path, name)
    schema = declared["schema"]
    pattern = schema["pattern"]
    good = matching(pattern, schema.get("maxLength"))
    near = HAND_PICKED + [value for value in draw(NEAR_MISSES) if value not in {"", ".", ".."}]
    if name == "cpb":  # cpb equal to cpa is refused; the description says so
        assert "not cpa" in declared["description"]
        near = [value for value in near if value != "1"]
        good = [value for value in good if value != "1"]
    assert len(good) > 20 and len(near) > 40
    async with http(server, tenants.a_key) as client:
        for value in good:
            response = await ask(client, value)
            assert response.status_code == taken, (name, value, response.text)
        mismatches = 0
        for value in near:
            response = await ask(client, value)
            fits = re.fullmatch(pattern, value) is not None and len(value) <= schema.get(
                "maxLength", len(value)
            )
            assert accepted(response, refusal) == fits, (name, value, response.text)
            mismatches += not fits
    assert mismatches >= 5  # the near misses did try the refusals


# -- the same agreement, many more strings, on the checks themselves -----------------------

MANY = settings(DRAWN, max_examples=400)


def takes(check: Callable[[str], object], value: str) -> bool:
    try:
        check(value)
    except BadRequest:
        return False
    return True


CHECKS: list[tuple[str, Callable[[str], object], int | None]] = [
    (DATE_PATTERN, lambda value: parse_date("datestart", value), None),
    (UNIQUEID_PATTERN, check_uniqueid, UNIQUEID_MAX),
    (EXTENSION_PATTERN, lambda value: check_dial(value, "+1"), None),
    (DIALABLE_PATTERN, lambda value: check_dial("1", value) if value != "1" else None, None),
]


@pytest.mark.parametrize(("pattern", "check", "max_length"), CHECKS, ids=lambda v: None)
def test_checks_agree_with_their_patterns(
    pattern: str, check: Callable[[str], object], max_length: int | None
) -> None:
    @MANY
    @given(st.one_of(st.from_regex(pattern, fullmatch=True), NEAR_MISSES))
    def agree(value: str) -> None:
        fits = re.fullmatch(pattern, value) is not None
        if max_length is not None:
            fits = fits and len(value) <= max_length
        assert takes(check, value) == fits, value

    agree()


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2024-02-29", True),
        ("2000-02-29", True),
        ("1900-02-29", False),
        ("2026-02-29", False),
        ("0400-02-29", True),
        ("0001-01-01", True),
        ("0000-01-01", False),
        ("9999-12-31", True),
        ("2026-04-31", False),
        ("2026-12-31", True),
    ],
)
def test_the_date_pattern_knows_the_calendar(value: str, ok: bool) -> None:
    assert (re.fullmatch(DATE_PATTERN, value) is not None) is ok
    assert takes(lambda v: parse_date("datestart", v), value) is ok


async def test_uniqueid_rule_and_message_agree(live: tuple[LiveServer, Tenants]) -> None:
    """`_` is in the message's alphabet, so `__main__` is a well-formed id (just unknown)."""
    server, tenants = live
    async with http(server, tenants.a_key) as client:
        unknown = await client.get("/record/__main__")
        assert_json_error(unknown, 404, "unknown_recording")
        refused = await client.get("/record/.hidden")
    message = assert_json_error(refused, 400, "invalid_uniqueid")["error"]
    assert "'_'" in message and "not starting with '.' or '-'" in message
