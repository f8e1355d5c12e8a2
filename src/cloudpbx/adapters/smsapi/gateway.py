"""The SMSAPI gateway: one account, spoken to over its HTTP API (see protocol.py).

Submissions carry our `idx` with `check_idx=1`, so a resubmission after a lost answer
cannot send the message twice (the gateway answers error 53). Transport failures are
sorted by whether the request can have reached the gateway: a refused connection is safe
to retry (RETRY), a timeout or broken answer may hide a sent message (UNSURE).

Nothing here logs the token or a message's text; errors name the account and the code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx

from cloudpbx.adapters.smsapi.callbacks import CallbackSigner
from cloudpbx.adapters.smsapi.config import Secret, SmsapiAccount
from cloudpbx.adapters.smsapi.protocol import (
    NOTIFY_URL_REFUSED,
    UNKNOWN_ID_ERRORS,
    ApiError,
    interpret_send,
    interpret_status,
)
from cloudpbx.domain.states import SmsStatus
from cloudpbx.ports.sms import (
    OutgoingSms,
    SmsGatewayUnavailable,
    SmsLookupRefused,
    SmsStatusSink,
    StatusReport,
    SubmitOutcome,
    SubmitResult,
)

log = logging.getLogger(__name__)

USER_AGENT = "cloudpbx-smsapi/1"
QUERY_BATCH = 50  # ids per status query (`status=ID|ID|...`)


class SmsapiGateway:
    """Sends through one SMSAPI account; reports come by callback (and, where enabled,
    rare status queries: SMSAPI asks its users for callbacks)."""

    kind = "smsapi"

    def __init__(
        self,
        name: str,
        account: SmsapiAccount,
        token: Secret | None,
        signer: CallbackSigner | None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.account = account
        self._token = token
        self.signer = signer
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        # Set when SMSAPI refused our notify_url (error 70): an operator's problem (the
        # callback base URL), shown in /healthz; messages go out without it until restart.
        self.alert: str | None = None

    def __repr__(self) -> str:
        return f"SmsapiGateway(name={self.name!r}, api_url={self.account.api_url!r})"

    @property
    def polls(self) -> bool:
        return self.account.poll

    @property
    def endpoint(self) -> str:
        return self.account.api_url.rstrip("/") + "/sms.do"

    def notify_url(self, pbx: str) -> str | None:
        if not self.account.callbacks or self.signer is None or self.alert is not None:
            return None
        return self.signer.url(pbx)

    def verify_callback(self, pbx: str, token: str) -> bool:
        return self.signer is not None and self.signer.verify(pbx, token)

    async def start(self, sink: SmsStatusSink) -> None:
        """Open the HTTP client; the token is read now (from its variable or file) unless
        it was given, so a missing token stops the server's start, not an admin command."""
        if self._token is None:
            self._token = self.account.load_token(self.name)
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
                headers={
                    "Authorization": f"Bearer {self._token.reveal()}",
                    "User-Agent": USER_AGENT,
                },
                transport=self._transport,
                trust_env=False,
                follow_redirects=False,
            )

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"SMSAPI gateway {self.name!r} is not started")
        return self._client

    async def submit(self, message: OutgoingSms) -> SubmitResult:
        result = await self._submit(message)
        if result.error_code == NOTIFY_URL_REFUSED and self.notify_url(message.pbx):
            # Not the message's fault: our callback URL is wrong. Alert, and send it
            # (and the account's next messages) without one.
            self.alert = (
                f"SMSAPI refused the delivery-report URL ({result.error}): check "
                "sms_callback_base_url; messages are sent without it, so their reports "
                "come only by status lookup (poll = true) or end UNKNOWN"
            )
            log.error("SMSAPI %s: %s", self.name, self.alert)
            result = await self._submit(message)
        return result

    async def _submit(self, message: OutgoingSms) -> SubmitResult:
        form = {
            "to": message.to,
            "message": message.body,
            "format": "json",
            "encoding": "utf-8",
            "details": "1",
            "idx": message.idx,
            "check_idx": "1",
        }
        if self.account.sender:
            form["from"] = self.account.sender
        if message.test:
            form["test"] = "1"
        notify_url = self.notify_url(message.pbx)
        if notify_url:
            form["notify_url"] = notify_url
        try:
            response = await self._http().post(self.endpoint, data=form)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return SubmitResult(
                None,
                SmsStatus.QUEUE,
                f"SMSAPI unreachable ({type(exc).__name__})",
                outcome=SubmitOutcome.RETRY,
            )
        except httpx.TimeoutException as exc:
            return SubmitResult(
                None,
                SmsStatus.QUEUE,
                f"SMSAPI did not answer in time ({type(exc).__name__})",
                outcome=SubmitOutcome.UNSURE,
            )
        except httpx.HTTPError as exc:
            return SubmitResult(
                None,
                SmsStatus.QUEUE,
                f"SMSAPI answer lost ({type(exc).__name__})",
                outcome=SubmitOutcome.UNSURE,
            )
        result = interpret_send(
            response.status_code,
            response.content,
            grosze_per_point=self.account.grosze_per_point,
            test=message.test,
        )
        if result.kind is not SubmitOutcome.ACCEPTED:
            log.info(
                "SMSAPI %s: SMS %s of %s: %s (%s)",
                self.name,
                message.idx,
                message.pbx,
                result.kind.value,
                result.error,
            )
        return result

    async def query(self, message_ids: Sequence[str]) -> list[StatusReport]:
        reports: list[StatusReport] = []
        ids = list(dict.fromkeys(message_ids))
        for start in range(0, len(ids), QUERY_BATCH):
            reports.extend(await self._query_batch(ids[start : start + QUERY_BATCH]))
        return reports

    async def _query_batch(self, ids: list[str]) -> list[StatusReport]:
        answer = await self._status(ids)
        if not isinstance(answer, ApiError):
            return answer
        if answer.code == 0:  # no error number: a broken answer, maybe a proxy's
            raise SmsGatewayUnavailable(f"SMSAPI {self.name}: {answer.describe()}")
        if answer.code not in UNKNOWN_ID_ERRORS:
            raise SmsLookupRefused(f"SMSAPI {self.name}: {answer.describe()}")
        if len(ids) == 1:
            # The gateway does not know this id (wrong, or its report expired).
            return [StatusReport(SmsStatus.NOT_FOUND, message_id=ids[0])]
        reports: list[StatusReport] = []
        for message_id in ids:  # one unknown id spoils a batch: ask one by one
            reports.extend(await self._query_batch([message_id]))
        return reports

    async def _status(self, ids: list[str]) -> list[StatusReport] | ApiError:
        form = {"status": "|".join(ids), "format": "json"}
        try:
            response = await self._http().post(self.endpoint, data=form)
        except httpx.HTTPError as exc:
            raise SmsGatewayUnavailable(
                f"SMSAPI {self.name}: status query failed ({type(exc).__name__})"
            ) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise SmsGatewayUnavailable(
                f"SMSAPI {self.name}: status query answered HTTP {response.status_code}"
            )
        return interpret_status(response.content)
