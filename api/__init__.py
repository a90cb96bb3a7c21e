"""The HTTP API (FastAPI) and the built-in pages."""
