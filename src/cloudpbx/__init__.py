"""cloudpbx: the CloudPBX API 1.3 (REST + WebSocket) in front of a virtual PBX."""

__version__ = "0.1.0"
