"""Event bus implementations (see cloudpbx.ports.bus)."""
