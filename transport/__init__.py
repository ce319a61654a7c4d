"""Bytes and sockets, nothing Raft-specific: codec, ZeroMQ endpoints, event loop, simulated network/clock/disk."""
