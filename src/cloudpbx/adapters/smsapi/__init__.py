"""SMSAPI (smsapi.pl / smsapi.com) as an SMS gateway: sending, delivery reports by callback
and by status query. See docs/sms.md for what was confirmed about the API and how."""

from cloudpbx.adapters.smsapi.callbacks import CALLBACK_PREFIX, CallbackSigner
from cloudpbx.adapters.smsapi.config import Secret, SmsapiAccount
from cloudpbx.adapters.smsapi.gateway import SmsapiGateway
from cloudpbx.adapters.smsapi.protocol import STATUS_CODES, STATUS_NUMBERS, parse_callback

__all__ = [
    "CALLBACK_PREFIX",
    "STATUS_CODES",
    "STATUS_NUMBERS",
    "CallbackSigner",
    "Secret",
    "SmsapiAccount",
    "SmsapiGateway",
    "parse_callback",
]
