"""Bytes and sockets, nothing Raft-specific: codec, ZeroMQ endpoints, event loop, simulated net and clock."""
