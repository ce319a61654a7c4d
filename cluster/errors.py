"""The exceptions a zraft client raises, split by what the caller can conclude about the request.

    ZraftError                    base of everything below
    ├── Rejected                  definite failure: the request was never applied (safe to fix and resend)
    │   ├── InvalidRequest        found invalid, by the client before sending or by the node before
    │   │                         proposing (bad key, value too large, a reserved "__zraft/" key, ...)
    │   ├── Busy                  the leader holds too much uncommitted work (no majority reachable?)
    │   └── LeaseNotFound         the lease does not exist: never granted, revoked, or expired and revoked
    │       └── LeaseExpired      the lease's TTL ran out on the leader (its revoke may still be under way)
    ├── NoAnswer                  no usable answer from the cluster within the timeout
    │   ├── OutcomeUnknown        ... to a write: it may or may not have been applied
    │   │   ├── AlreadyApplied    ... it was applied (exactly once), but its result is no longer known
    │   │   └── SessionExpired    ... its session ended while it was retried: applied at most once
    │   └── Unavailable           ... to a read or status, or every node refused a write: nothing changed
    │       └── HandshakeRefused  ... because the nodes refused this client's connection (its CURVE keys)
    ├── WatchEnded                a watch stream ended and cannot go on without the caller
    │   ├── Compacted             ... its next revision is older than the node's history window
    │   └── WatchCancelled        ... a node refused or ended it (a node bound, such as max watches)
    └── ClientClosed              the Client was used after close()

Catch NoAnswer to handle "the cluster is not answering" in one place; catch OutcomeUnknown when a write's
effect matters (read the key back, or retry with a compare-and-swap). AlreadyApplied is an OutcomeUnknown
that knows a little more: the write took effect once and will not take effect again, but what it returned
(the revision of a put, whether a cas swapped) is lost. It happens when a retry of the write reaches the
cluster after the cluster dropped the first attempt's cached answer (its per-session cache is bounded:
cluster/kv/sessions.py). The same handling is right for both: read the state back before deciding.
SessionExpired is one more: the client's session expired (or was evicted) while the write was being
retried, so the cluster refused the retry; the write took effect at most once and will never take effect
from now on. (A write refused for its session when no attempt of it can have been applied is simply sent
again under a fresh session: the caller never sees that.)
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
    """The request is invalid: bad key, bad value type, value too large, a key under the reserved
    "__zraft/" prefix, ... Found by the client before sending it, or by the node before proposing it."""

    def _describe(self) -> str:
        return f"invalid {self.operation}: {self.reason}"


class Busy(Rejected):
    """The leader refused the request at once: too many writes wait for commit (or reads for
    confirmation), typically because it cannot reach a majority. Nothing was applied; retry later."""

    def _describe(self) -> str:
        return f"{self.operation} refused, the cluster is busy: {self.reason}"


class LeaseNotFound(Rejected):
    """The lease is unknown to the cluster: never granted, revoked, or expired (and revoked). A put with
    it wrote nothing; a keepalive cannot bring it back: grant a new lease."""

    def _describe(self) -> str:
        return f"{self.operation}: {self.reason}"


class LeaseExpired(LeaseNotFound):
    """The lease's TTL ran out by the leader's clock; its keys are being (or were) deleted. Nothing of the
    request was applied; grant a new lease."""


class PermissionDenied(Rejected):
    """The client's key (its user) has no right to this key or prefix (cluster/kv/permissions.py).
    Nothing was written or read."""

    def _describe(self) -> str:
        return f"{self.operation}: permission denied: {self.reason}"


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
    """A read or status request got no answer (no reachable node, or no leader), or every node that a
    write reached refused it before proposing it (no leader); nothing was changed."""

    def _describe(self) -> str:
        return super()._describe() + "; nothing was changed"


class HandshakeRefused(Unavailable):
    """No node answered because the nodes refused this client's connection handshake: its CURVE key is not
    on their allow-list, the server public key it holds for a node is not that node's, or one side uses
    CURVE and the other does not. `refusals` maps each refusing node URL to what went wrong there."""

    def __init__(self, operation: str, timeout: float, refusals: dict[str, str]) -> None:
        self.refusals = dict(refusals)
        detail = "; ".join(f"{url}: {why}" for url, why in sorted(self.refusals.items()))
        super().__init__(operation, timeout, detail)


class ClientClosed(ZraftError):
    """The Client was used after close()."""

    def __init__(self) -> None:
        super().__init__("the client is closed")


class AlreadyApplied(OutcomeUnknown):
    """A retried write that the cluster had applied already, once; its result is no longer kept.

    The write's effect happened exactly once and will not happen again. What it returned is unknown:
    read the key back (a put's revision is the key's mod_revision only if nothing wrote it since).
    `timeout` is the request's timeout; the answer itself came in time.
    """

    def _describe(self) -> str:
        text = f"{self.operation}: the write was applied, but the cluster no longer knows its result"
        return f"{text} ({self.detail})" if self.detail else text


class SessionExpired(OutcomeUnknown):
    """The write's client session was unknown to the cluster when a retry of the write arrived: it had
    expired (idle longer than the cluster's session TTL by the leader's clock, typically because this
    client was cut off from the cluster for that long) or was evicted for the cluster's session bounds.

    What the caller knows: an earlier attempt of the write may have been applied, at most once; no attempt
    of it will be applied from now on (the cluster never applies a write of a session it does not know).
    So, as for any OutcomeUnknown, read the state back before deciding; resending is a new write. The
    client has dropped the session and registers a fresh one for its next write. `timeout` is the
    request's timeout; the refusal itself came in time.
    """

    def _describe(self) -> str:
        text = (
            f"{self.operation}: the client session expired while the write was retried; "
            "an earlier attempt may have been applied (at most once), none will be from now on"
        )
        return f"{text} ({self.detail})" if self.detail else text


class WatchEnded(ZraftError):
    """A watch stream ended: events after the last one delivered can no longer come from it."""


class Compacted(WatchEnded):
    """The watch's next revision is older than the history the node keeps (it was asked too old, or the
    watcher consumed too slowly and fell out of the window, or the node was restored from a snapshot).
    Re-list the prefix (range_all) and watch again from the listing's revision + 1."""

    def __init__(self, compact_revision: int, reason: str) -> None:
        self.compact_revision = compact_revision
        self.reason = reason
        super().__init__(f"watch compacted at revision {compact_revision}: {reason}")


class WatchCancelled(WatchEnded):
    """A node ended the watch for the reason given (e.g. it serves too many watches already)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"watch cancelled: {reason}")
