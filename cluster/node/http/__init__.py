"""The HTTP status server of a node: JSON status API, /health, /ready, /metrics and the live status page."""
