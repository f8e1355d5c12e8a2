"""REST endpoints, one module per resource of the contract."""
