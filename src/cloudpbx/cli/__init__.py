"""The `cloudpbx` command."""
