"""Use cases: what the API, the CLI and the backends ask of the system."""
