"""WatchFollower: the client side of one watch as a state machine (no sockets, no clock, no threads).

It owns which node serves the watch, the id of the current stream, what was delivered (so a stream
reopened elsewhere gives no gap and no duplicate), the credit it returns to the node, keepalives, and the
end of the watch. The node side and the frames are described in cluster/kv/watches.py. The Client's I/O
thread (cluster/client/io_thread.py) and the simulator (tests/sim/harness.py) drive it alike.

A node that answers Compacted may be one that restarted and lost its history: the follower tries every
other node before it ends the watch with Compacted (the smallest compact revision they gave); a node that
does not answer at all within `open_timeout` (gone: a member since removed) does not hold that end back.

Resuming: `through` is the highest revision some stream said it had sent completely. When a stream goes
silent (no frame, not even a progress notification, for `silence_timeout`), or its first frame does not
come within `open_timeout`, the follower cancels it (best effort) and opens a new stream on the next node,
from `through + 1`, or, if the last delivered event's revision was sent only in part (a del_prefix split
over frames), from that revision, skipping the keys of it already delivered. Events at or below what was
delivered are dropped, so the caller sees each change exactly once, in revision order. A node that is
behind simply sends nothing until it has applied the revisions asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from actors.messages import ClientRequest, ClientResponse, NodeId, RequestKind, Status
from cluster.errors import Compacted, InvalidRequest, PermissionDenied, WatchCancelled, WatchEnded
from cluster.kv.ops import pack
from cluster.kv.permissions import PERMISSION_DENIED_CODE
from cluster.kv.watches import encode_watch


@dataclass(frozen=True, slots=True)
class FollowerOptions:
    window: int = 1000  # events the node may send before we acknowledge them
    open_timeout: float = 1.0  # no first frame within this: try another node
    silence_timeout: float = 5.0  # no frame at all (progress comes every second) for this: another node
    keepalive: float = 5.0  # acknowledge at least this often, so the node keeps the stream
    prev_kv: bool = False  # events carry "prev", the key's previous value (None: absent)


class WatchFollower:
    def __init__(
        self,
        client_id: NodeId,
        nodes: tuple[NodeId, ...],
        key: str,
        prefix: bool,
        start: int,
        new_stream_id: Callable[[], int],
        options: FollowerOptions | None = None,
        first_node: int = 0,
    ) -> None:
        if not nodes:
            raise ValueError("a watch needs at least one node")
        self.client_id = client_id
        self.nodes = nodes
        self.key = key
        self.prefix = prefix
        self.options = options or FollowerOptions()
        self._new_stream_id = new_stream_id
        self._cursor = first_node % len(nodes)
        self.start = start  # the first revision asked for (0: from the first stream's opening)
        self.through = start - 1 if start else 0  # every change up to here was delivered
        self.last_revision = 0  # of the last delivered event
        self._keys_at_last: set[str] = set()
        self.target: NodeId = ""
        self.stream = 0
        self.opened = False
        self.ended: WatchEnded | InvalidRequest | PermissionDenied | None = None
        self.queued = 0  # delivered to the consumer, not yet consumed
        self._consumed = 0  # events of the current stream consumed (or dropped as duplicates)
        self._acked = 0  # the total last sent in a WATCH_ACK
        self._opened_at = 0.0
        self._last_heard = 0.0
        self._last_ack = 0.0
        self._outbox: list[ClientRequest] = []
        self.resumes = 0
        self._frames = 0  # STREAM frames taken from the current stream
        self._compacted: dict[NodeId, Compacted] = {}  # nodes that answered Compacted since the last frame
        # Nodes that did not answer an opening since the last frame: gone (a member since removed, say),
        # so a watch that every answering node calls Compacted ends rather than asking the silent forever.
        self._silent: set[NodeId] = set()

    # --- inputs -----------------------------------------------------------------------------------

    def begin(self, now: float) -> None:
        self._open(now)

    def on_response(self, msg: ClientResponse, now: float) -> list[dict[str, Any]]:
        """A frame of one of our streams; returns the events to deliver, in order."""
        if msg.req_id != self.stream or msg.src != self.target or self.ended is not None:
            return []  # an old stream's late frame
        status = msg.status
        if status == Status.STREAM:
            frame = _decode_frame(msg.result)
            if frame is None:
                self._switch(now)  # a broken frame: trust nothing more from this stream
                return []
            number, through, raw_events = frame
            if number < self._frames:
                return []  # a copy of one we had
            if number > self._frames:
                self._switch(now)  # a frame went missing: resume rather than miss its events
                return []
            self._frames += 1
            self.opened = True
            self._compacted.clear()
            self._silent.clear()
            if not self.start:  # "from now": now is the revision the first stream opened at
                self.start = through + 1
            self._last_heard = now
            events = [e for e in raw_events if self._fresh(e)]
            for event in events:
                revision = event["revision"]
                if revision != self.last_revision:
                    self.last_revision = revision
                    self._keys_at_last = set()
                self._keys_at_last.add(event["key"])
            self.through = max(self.through, through)
            self.queued += len(events)
            # Events this stream sent but we dropped as already delivered still used its credit.
            self._consumed += len(raw_events) - len(events)
            return events
        if status == Status.WATCH_COMPACTED:
            body = _unpack(msg.result)
            compact = body.get("compact_revision", 0) if isinstance(body, dict) else 0
            reason = body.get("reason", "") if isinstance(body, dict) else ""
            self._compacted[msg.src] = Compacted(compact if type(compact) is int else 0, str(reason))
            if len(self._compacted) + len(self._silent - self._compacted.keys()) < len(self.nodes):
                self._switch(now)  # it lost them (restarted, or a smaller window): try the others
            else:
                self.ended = min(self._compacted.values(), key=lambda c: c.compact_revision)
        elif status == Status.WATCH_CANCELLED:
            self.ended = WatchCancelled(msg.result.decode("utf-8", "replace"))
        elif status == Status.BAD_REQUEST:
            self.ended = _refusal(msg.result)
        else:  # an answer a watch cannot get (NOT_LEADER, ...): this node will not serve it
            self._switch(now)
        return []

    def consumed(self, count: int) -> None:
        """The consumer took `count` delivered events."""
        self.queued -= count
        self._consumed += count

    def tick(self, now: float) -> None:
        if self.ended is not None:
            return
        # The same sums as next_deadline(): a difference could round below the timeout at the deadline.
        opens_late = not self.opened and now >= self._opened_at + self.options.open_timeout
        if (
            opens_late
            and self._compacted
            and len(self._compacted) + len(self._silent | {self.target}) >= len(self.nodes)
        ):
            self.ended = min(self._compacted.values(), key=lambda c: c.compact_revision)
        elif opens_late or (self.opened and now >= self._last_heard + self.options.silence_timeout):
            if opens_late:
                self._silent.add(self.target)
            self._switch(now)
        elif self._consumed - self._acked >= max(1, self.options.window // 4) or (
            self.opened and now >= self._last_ack + self.options.keepalive
        ):
            self._send(RequestKind.WATCH_ACK, pack([self.stream, self._consumed]))
            self._acked = self._consumed
            self._last_ack = now

    def close(self) -> None:
        """Cancel the stream (the node may never hear it; it drops the stream once keepalives stop)."""
        if self.ended is None and self.stream:
            self._send(RequestKind.WATCH_CANCEL, pack(self.stream))
        if self.ended is None:
            self.ended = WatchCancelled("closed by the client")

    def next_deadline(self) -> float:
        if self.ended is not None:
            return float("inf")
        if not self.opened:
            return self._opened_at + self.options.open_timeout
        return min(self._last_heard + self.options.silence_timeout, self._last_ack + self.options.keepalive)

    # --- outputs ----------------------------------------------------------------------------------

    def take_messages(self) -> list[ClientRequest]:
        out, self._outbox = self._outbox, []
        return out

    # --- internals --------------------------------------------------------------------------------

    def _fresh(self, event: dict[str, Any]) -> bool:
        revision = event["revision"]
        if revision <= self.through or revision < self.last_revision:
            return False
        return revision > self.last_revision or event["key"] not in self._keys_at_last

    def _resume_from(self) -> int:
        if self.last_revision > self.through:
            return self.last_revision  # sent in part: its other keys may follow; the ones we had are skipped
        if self.through:
            return self.through + 1
        return self.start  # nothing known yet: what was first asked

    def _switch(self, now: float) -> None:
        if self.stream:
            self._send(RequestKind.WATCH_CANCEL, pack(self.stream))
        self.resumes += 1
        self._cursor = (self._cursor + 1) % len(self.nodes)
        self._open(now)

    def _open(self, now: float) -> None:
        self.target = self.nodes[self._cursor]
        self.stream = self._new_stream_id()
        self.opened = False
        self._frames = 0
        self._opened_at = now
        self._last_ack = now
        self._consumed = self._acked = 0
        window = max(1, self.options.window - self.queued)
        spec = encode_watch(self.key, self.prefix, self._resume_from(), window, self.options.prev_kv)
        self._send(RequestKind.WATCH, spec)

    def _send(self, kind: RequestKind, payload: bytes) -> None:
        self._outbox.append(ClientRequest(self.client_id, self.target, self.stream, kind, payload))


def _refusal(result: bytes) -> InvalidRequest | PermissionDenied:
    """The error a BAD_REQUEST ends a watch with: PermissionDenied when the node says the client's key may
    not read the key or prefix (a structured error, as for reads and writes), else InvalidRequest."""
    body = _unpack(result)
    if isinstance(body, dict) and body.get("code") == PERMISSION_DENIED_CODE:
        return PermissionDenied("watch", str(body.get("error", "")))
    return InvalidRequest("watch", result.decode("utf-8", "replace"))


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return None


_EVENT_FIELDS = frozenset({"type", "key", "value", "revision", "create_revision", "version"})
_EVENT_FIELDS_PREV = _EVENT_FIELDS | {"prev"}


def _decode_frame(data: bytes) -> tuple[int, int, list[dict[str, Any]]] | None:
    frame = _unpack(data)
    if (
        type(frame) is not list
        or len(frame) != 3
        or type(frame[0]) is not int
        or type(frame[1]) is not int
        or type(frame[2]) is not list
    ):
        return None
    events = frame[2]
    for event in events:  # per event: no new objects (a dict's keys compare with a set as they are)
        if (
            type(event) is not dict
            or not (event.keys() == _EVENT_FIELDS or event.keys() == _EVENT_FIELDS_PREV)
            or type(event["revision"]) is not int
            or type(event["key"]) is not str
        ):
            return None
    return frame[0], frame[1], events
