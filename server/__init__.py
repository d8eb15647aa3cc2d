"""The WebRTC gateway (FastAPI signalling + aiortc sessions). Never imports torch. See docs/architecture.md."""
