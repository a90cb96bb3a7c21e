"""Shared fixtures live in tests/plugins (loaded by pytest's addopts)."""
