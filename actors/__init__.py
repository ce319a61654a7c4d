"""Raft as message-driven state machines: no sockets, no clock, no disk, no threads (DESIGN.md rule 1)."""
