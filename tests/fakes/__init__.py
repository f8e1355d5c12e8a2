"""Fakes of the outside services the tests cannot reach (SMSAPI)."""
