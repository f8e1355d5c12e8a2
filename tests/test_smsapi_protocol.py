"""The SMSAPI adapter's pure parts: answers, callbacks, tokens, secrets, settings."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from cloudpbx.adapters.smsapi import STATUS_CODES, CallbackSigner, Secret, SmsapiAccount
from cloudpbx.adapters.smsapi.callbacks import load_or_create_key
from cloudpbx.adapters.smsapi.protocol import (
    cost_in_grosze,
    interpret_send,
    interpret_status,
    parse_callback,
    points_of,
)
from cloudpbx.domain.states import SmsStatus
from cloudpbx.ports.sms import StatusReport, SubmitOutcome
from cloudpbx.services.sms import OutboxPolicy
from cloudpbx.settings import Settings
from tests.fakes.smsapi import STATUS_NUMBERS

# -- statuses --------------------------------------------------------------------------------


def test_status_codes_cover_the_contract_in_order() -> None:
    assert list(STATUS_CODES) == list(range(401, 413))
    assert [s.value for s in STATUS_CODES.values()] == [
        "NOT_FOUND",
        "EXPIRED",
        "SENT",
        "DELIVERED",
        "UNDELIVERED",
        "FAILED",
        "REJECTED",
        "UNKNOWN",
        "QUEUE",
        "ACCEPTED",
        "RENEWAL",
        "STOP",
    ]
    assert set(STATUS_CODES.values()) == set(SmsStatus)
    # The fake, written separately from SMSAPI's list, agrees.
    assert {code: status.value for code, status in STATUS_CODES.items()} == {
        n: name for name, n in STATUS_NUMBERS.items()
    }


# -- send answers ----------------------------------------------------------------------------


def send_answer(http: int, document: object) -> tuple[SubmitOutcome, object]:
    result = interpret_send(http, orjson.dumps(document), grosze_per_point=100, test=False)
    return result.kind, result


def test_accepted_answer() -> None:
    document = {
        "count": 1,
        "list": [
            {
                "id": "17101000090360359",
                "points": 0.33,
                "number": "48600100200",
                "date_sent": 1460969712,
                "submitted_number": "48600100200",
                "status": "QUEUE",
                "idx": "3421756012963258480",
            }
        ],
        "parts": 2,
    }
    result = interpret_send(200, orjson.dumps(document), grosze_per_point=100, test=False)
    assert result.kind is SubmitOutcome.ACCEPTED and result.message_id == "17101000090360359"
    assert result.status is SmsStatus.QUEUE and result.cost == 33 and result.parts == 2
    test = interpret_send(200, orjson.dumps(document), grosze_per_point=100, test=True)
    assert test.cost == 0


@pytest.mark.parametrize(
    ("http", "document", "kind"),
    [
        (200, {"error": 13, "message": "No correct phone numbers"}, SubmitOutcome.REFUSED),
        (200, {"error": 11, "message": "Message too long"}, SubmitOutcome.REFUSED),
        # The account's errors hold its outbox; they fail no message.
        (401, {"error": 101, "message": "Authorization failed"}, SubmitOutcome.HOLD),
        (200, {"error": 102, "message": "Invalid username or password"}, SubmitOutcome.HOLD),
        (200, {"error": 103, "message": "Insufficient credits"}, SubmitOutcome.HOLD),
        (200, {"error": 105, "message": "Wrong IP address"}, SubmitOutcome.HOLD),
        (200, {"error": 110, "message": "Action not allowed"}, SubmitOutcome.HOLD),
        # Error 8 is a server error in SMSAPI's clients: retried.
        (200, {"error": 8, "message": "Error in request"}, SubmitOutcome.RETRY),
        (200, {"error": 666, "message": "Internal system error"}, SubmitOutcome.RETRY),
        (200, {"error": 53, "message": "Not unique idx"}, SubmitOutcome.DUPLICATE),
        (200, {"error": "53", "message": "Not unique idx"}, SubmitOutcome.DUPLICATE),
        (200, {"error": 201, "message": "System internal error"}, SubmitOutcome.RETRY),
        (503, {"error": 999, "message": "System internal error"}, SubmitOutcome.RETRY),
        (200, {"error": 52, "message": "Too many attempts"}, SubmitOutcome.RETRY),
        (429, "", SubmitOutcome.RETRY),
        (502, "", SubmitOutcome.UNSURE),
        (200, "", SubmitOutcome.UNSURE),
        (200, {"count": 0, "list": []}, SubmitOutcome.UNSURE),
        (200, {"count": 1, "list": [{"points": 1}]}, SubmitOutcome.UNSURE),
        (403, "", SubmitOutcome.REFUSED),
        (
            200,
            {"count": 1, "list": [{"id": "1", "error": 13, "message": "Invalid number"}]},
            SubmitOutcome.REFUSED,
        ),
    ],
)
def test_answers_are_sorted_by_what_they_mean(
    http: int, document: object, kind: SubmitOutcome
) -> None:
    found, result = send_answer(http, document)
    assert found is kind, result


def test_points_as_strings_and_parts_on_the_entry() -> None:
    """SMSAPI's python client fixtures put `parts` on the list entry; points may come as
    a string."""
    document = {
        "count": 1,
        "list": [{"id": "1", "points": "0.165", "number": "48600100200", "parts": 3}],
    }
    result = interpret_send(201, orjson.dumps(document), grosze_per_point=100, test=False)
    assert result.kind is SubmitOutcome.ACCEPTED
    assert (result.cost, result.parts) == (17, 3)


def test_error_text_names_the_code_and_the_gateways_message() -> None:
    _, result = send_answer(200, {"error": 13, "message": "No correct phone numbers"})
    assert result.error == "SMSAPI error 13: No correct phone numbers"  # type: ignore[attr-defined]


def test_html_error_page_is_not_json() -> None:
    result = interpret_send(502, b"<html>Bad gateway</html>", grosze_per_point=100, test=False)
    assert result.kind is SubmitOutcome.UNSURE


@pytest.mark.parametrize(
    ("points", "per_point", "grosze"),
    [("0.165", 100, 17), ("0.16", 100, 16), ("0.33", 100, 33), ("0", 100, 0), ("1", 12.5, 13)],
)
def test_cost_rounds_up_to_a_whole_grosz(points: str, per_point: float, grosze: int) -> None:
    assert cost_in_grosze(points_of(points), per_point, test=False) == grosze


def test_points_that_are_not_numbers_give_no_cost() -> None:
    for value in (None, "", "abc", "-1", "NaN", "Infinity"):
        assert cost_in_grosze(points_of(value), 100, test=False) is None


# -- status query answers --------------------------------------------------------------------


def test_status_answer() -> None:
    document = {
        "count": 3,
        "list": [
            {"id": "1", "status": "DELIVERED", "idx": "77", "points": 0.16},
            {"id": "2", "status": "404", "idx": ""},
            {"id": "3", "status": "WHATEVER"},
            "junk",
        ],
    }
    assert interpret_status(orjson.dumps(document)) == [
        StatusReport(SmsStatus.DELIVERED, idx="77", message_id="1", points=0.16),
        StatusReport(SmsStatus.DELIVERED, idx=None, message_id="2"),
    ]
    error = interpret_status(orjson.dumps({"error": 301, "message": "ID doesn't exist"}))
    assert not isinstance(error, list) and error.code == 301


# -- callbacks -------------------------------------------------------------------------------


def test_single_callback() -> None:
    parsed = parse_callback(
        {
            "MsgId": "17101000090360359",
            "status": "404",
            "idx": "3421756012963258480",
            "donedate": "1760000000",
            "points": "0.16",
            "to": "48600100200",
            "username": "user@example.com",
        }
    )
    assert parsed.skipped == 0
    assert parsed.reports == [
        StatusReport(
            SmsStatus.DELIVERED,
            idx="3421756012963258480",
            message_id="17101000090360359",
            points=0.16,
            done_at=datetime(2025, 10, 9, 8, 53, 20, tzinfo=UTC),
        )
    ]


def test_batched_callback_and_shared_fields() -> None:
    parsed = parse_callback(
        {"MsgId": "1,2,3", "status": "404,405,403", "idx": "a,b,c", "donedate": "1760000000"}
    )
    assert [(r.message_id, r.idx, r.status.value) for r in parsed.reports] == [
        ("1", "a", "DELIVERED"),
        ("2", "b", "UNDELIVERED"),
        ("3", "c", "SENT"),
    ]
    assert all(r.done_at is not None for r in parsed.reports)  # one donedate for all


def test_idx_is_used_only_when_there_is_one_per_message() -> None:
    parsed = parse_callback({"MsgId": "1,2", "status": "404", "idx": "a"})
    assert [(r.message_id, r.idx, r.status.value) for r in parsed.reports] == [
        ("1", None, "DELIVERED"),
        ("2", None, "DELIVERED"),
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"MsgId": "1", "status": "400"},
        {"MsgId": "1", "status": "413"},
        {"MsgId": "1", "status": ""},
        {"MsgId": "1'; DROP TABLE sms;--", "status": "404"},
        {"MsgId": "1,2,3", "status": "404,405"},  # 3rd status missing
    ],
)
def test_unreadable_entries_are_skipped(params: dict[str, str]) -> None:
    parsed = parse_callback(params)
    assert parsed.skipped >= 1
    assert all(r.message_id in {"1", "2"} for r in parsed.reports)


def test_no_message_id_is_no_report() -> None:
    assert parse_callback({"status": "404"}).reports == []
    assert parse_callback({}).skipped == 0


# -- tokens and secrets ----------------------------------------------------------------------


def test_callback_tokens(tmp_path: Path) -> None:
    signer = CallbackSigner(tmp_path / "keys" / "sms-callback.key", "https://pbx.example.com/")
    token = signer.token("MojaCentrala")
    assert len(token) == 43 and token == signer.token("MojaCentrala")
    assert signer.verify("MojaCentrala", token)
    assert not signer.verify("InnaCentrala", token)
    assert not signer.verify("MojaCentrala", token[:-1])
    assert not signer.verify("MojaCentrala", token + "A")
    assert not signer.verify("MojaCentrala", "\udcff" * 43)  # undecodable path bytes
    assert signer.url("MojaCentrala") == (
        f"https://pbx.example.com/callbacks/smsapi/MojaCentrala/{token}"
    )
    key_file = tmp_path / "keys" / "sms-callback.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Another server with the same key makes the same URLs; another key does not.
    assert CallbackSigner(key_file).token("MojaCentrala") == token
    other = CallbackSigner(tmp_path / "other.key")
    assert other.token("MojaCentrala") != token and other.url("MojaCentrala") is None
    assert token not in repr(signer)


def test_callback_key_file_must_be_a_real_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not hex")
    with pytest.raises(ValueError, match="hex"):
        load_or_create_key(bad)
    bad.write_text("00ff")
    with pytest.raises(ValueError, match="128 bits"):
        load_or_create_key(bad)


def test_secret_never_shows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = Secret("s3cr3t-token-value")
    assert "s3cr3t" not in repr(secret) and "s3cr3t" not in str(secret)
    assert f"{secret}" == "Secret('********')" and secret.reveal() == "s3cr3t-token-value"
    monkeypatch.setenv("ACME_SMSAPI_TOKEN", "  from-env-token \n")
    account = SmsapiAccount(token_env="ACME_SMSAPI_TOKEN")
    assert account.load_token("acme").reveal() == "from-env-token"
    assert "from-env-token" not in repr(account)
    monkeypatch.delenv("ACME_SMSAPI_TOKEN")
    with pytest.raises(ValueError, match="ACME_SMSAPI_TOKEN is not set"):
        account.load_token("acme")
    token_file = tmp_path / "token"
    token_file.write_text("from-file-token\n")
    assert SmsapiAccount(token_file=token_file).load_token("acme").reveal() == "from-file-token"
    with pytest.raises(ValueError, match="cannot read token file"):
        SmsapiAccount(token_file=tmp_path / "missing").load_token("acme")


def test_an_account_names_exactly_one_token_source(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        SmsapiAccount()
    with pytest.raises(ValidationError, match="exactly one"):
        SmsapiAccount(token_env="X", token_file=tmp_path / "t")
    with pytest.raises(ValidationError):
        SmsapiAccount(token_env="X", token="inline-tokens-are-not-accepted")  # type: ignore[call-arg]


def test_settings_take_accounts_from_toml_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(
        smsapi={"acme": {"token_env": "ACME_TOKEN", "sender": "Acme"}},  # type: ignore[dict-item]
        sms_callback_base_url="https://pbx.example.com",
    )
    assert settings.smsapi["acme"].api_url == "https://api.smsapi.pl"
    assert settings.smsapi["acme"].grosze_per_point == 100
    monkeypatch.setenv("CLOUDPBX_SMSAPI", '{"beta": {"token_file": "/run/secrets/beta"}}')
    from_env = Settings()
    assert from_env.smsapi["beta"].token_file == Path("/run/secrets/beta")
    assert os.environ["CLOUDPBX_SMSAPI"]  # nothing secret in it: a file name


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = OutboxPolicy(retry_base=2, retry_max=300)
    delays = [policy.retry_delay(n) for n in range(1, 12)]
    assert timedelta(seconds=1.6) <= delays[0] <= timedelta(seconds=2.4)
    assert timedelta(seconds=3.2) <= delays[1] <= timedelta(seconds=4.8)
    assert all(d <= timedelta(seconds=360) for d in delays)
    assert delays[-1] >= timedelta(seconds=240)
