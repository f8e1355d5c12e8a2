"""The HTTP and WebSocket surface of the CloudPBX API."""
