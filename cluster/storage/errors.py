"""The storage's exceptions: anything that stops a node from starting on its data directory."""

from __future__ import annotations


class StorageError(Exception):
    """The data directory cannot be used (misuse, unexpected layout, I/O trouble)."""


class CorruptionError(StorageError):
    """Data on disk is damaged in a way recovery must not paper over; the message names file and offset."""


class IdentityMismatch(StorageError):
    """The data directory belongs to another node or another cluster."""
