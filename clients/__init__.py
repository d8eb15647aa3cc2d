"""Clients of the gateway: `web/` (demo page) and `python/` (aiortc client library and CLI)."""
