"""The boundaries the adapters implement: PBX backend, SMS gateway, transcription engine,
event bus. Each is a small typing.Protocol; only the wiring (cloudpbx.app) picks concrete
implementations."""
