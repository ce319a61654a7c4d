"""The exceptions a zraft client raises, split by what the caller can conclude about the request.

    ZraftError                    base of everything below
    ├── Rejected                  definite failure: the request was never applied (safe to fix and resend)
    │   └── InvalidRequest        found invalid by the client before sending (bad key, value too large, ...)
    ├── NoAnswer                  the cluster did not answer within the timeout
    │   ├── OutcomeUnknown        ... to a write: it may or may not have been applied
    │   └── Unavailable           ... to a read or status: nothing was changed
    └── ClientClosed              the Client was used after close()

Catch NoAnswer to handle "the cluster is not answering" in one place; catch OutcomeUnknown when a write's
effect matters (read the key back, or retry with a compare-and-swap).
"""

from __future__ import annotations


class ZraftError(Exception):
    """Base class of every error a zraft client raises."""


class Rejected(ZraftError):
    """A definite failure: the cluster (or the client, for InvalidRequest) refused the request.

    The request was never applied, so it is safe to correct and send again.
    """

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(self._describe())

    def _describe(self) -> str:
        return f"{self.operation} rejected by the cluster: {self.reason}"


class InvalidRequest(Rejected, ValueError):
    """The client refused the request before sending it: bad key, bad value type, value too large, ..."""

    def _describe(self) -> str:
        return f"invalid {self.operation}: {self.reason}"


class NoAnswer(ZraftError):
    """The cluster gave no usable answer within the timeout (no node reachable, or no leader)."""

    def __init__(self, operation: str, timeout: float, detail: str = "") -> None:
        self.operation = operation
        self.timeout = timeout
        self.detail = detail
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"{self.operation}: no answer from the cluster within {self.timeout:g}s"
        return f"{text} ({self.detail})" if self.detail else text


class OutcomeUnknown(NoAnswer):
    """A write timed out (or its leader was lost): it may or may not have been applied.

    Retrying a put is harmless; for anything else read the state back before deciding what to do.
    """

    def _describe(self) -> str:
        return super()._describe() + "; the write may or may not have been applied"


class Unavailable(NoAnswer):
    """A read or status request got no answer (no reachable node, or no leader); nothing was changed."""

    def _describe(self) -> str:
        return super()._describe() + "; nothing was changed"


class ClientClosed(ZraftError):
    """The Client was used after close()."""

    def __init__(self) -> None:
        super().__init__("the client is closed")
