"""The model zoo configs (TOML), installed as package data so `ila-fast` finds them anywhere."""
