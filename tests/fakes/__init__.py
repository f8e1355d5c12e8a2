"""Fakes of the outside services the tests cannot reach, speaking their real wire
protocols over loopback: SMSAPI, OpenAI-compatible speech/chat servers, and an AMI server
that replays recorded Asterisk sessions."""
