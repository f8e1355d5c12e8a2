"""Implementations of the ports: PBX backends, SMS gateways, transcription engines."""
