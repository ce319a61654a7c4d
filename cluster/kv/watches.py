"""Watch streams, the node's side: the registry of open watches, their flow control and their frames.

No I/O and no clock of its own: KVService (cluster/kv/service.py) hands it requests with their connection
and calls `pump(now)` every loop turn; what it wants sent is handed to `send(conn, response)`.

Protocol (actors/messages.py RequestKind.WATCH*, Status.STREAM/WATCH_*). A WATCH request opens a stream
named by its req_id on its connection; its payload is a msgpack map

    {"key": str, "prefix": bool, "start": int (0 = from the next change), "window": int (events),
     "prev_kv": bool (optional, default false: events carry "prev", the key's previous value)}

Every frame of the stream is a ClientResponse with that req_id:

    STREAM            result = [n, through, [event, ...]]: n counts the stream's frames from 0 (so a
                      client sees a lost or reordered frame and resumes instead of missing events); the
                      events (cluster/kv/history.py gives their encoding) in revision order; and
                      `through`: every matching change up to that revision has now been sent on this stream.
                      A frame without events is a progress notification,
                      sent when the stream opens and then every `progress_interval` without events.
    WATCH_COMPACTED   result = {"compact_revision": int, "reason": str}: the stream's next revision is no
                      longer in this node's history (asked too old, or the watcher fell out of the window
                      while it did not consume: the slow-watcher case). The stream is over.
    WATCH_CANCELLED   result = the reason (utf-8): cancelled by the client, or a bound of this node.

A revision's events may be split over frames (a del_prefix may delete more keys than fit): `through` then
stays below that revision until its last event is sent.

Flow control is per stream credit: the node sends at most `window` events the client has not yet
acknowledged (WATCH_ACK [id, total]: how many events of this stream the client consumed so far, a total
rather than a difference so that a lost or repeated ack costs nothing; sent as the client consumes, and
again as a keepalive at least every few seconds: a stream not heard of for `idle_timeout` is dropped
without a frame, so the streams of a client that vanished do not stay). A stream holds no events of its
own, only a cursor into the replica's history ring, so a slow watcher costs the node nothing but its
cursor: once the ring drops the cursor's event, the stream ends with WATCH_COMPACTED ("the watcher fell
behind"). The history bounds are therefore the slow-watcher bound, in events and bytes. Bad payloads
answer BAD_REQUEST; WATCH_CANCEL and WATCH_ACK for unknown streams are ignored.

Followers serve watches from their applied state: events may lag the leader's, never differ or reorder.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import msgpack

from actors.messages import ClientRequest, ClientResponse, NodeId, Status
from cluster.kv.history import History
from cluster.kv.ops import MAX_KEY_BYTES, UINT64_MAX, pack
from transport.codec import msgpack_array_header

C = TypeVar("C", bound=Hashable)

DEFAULT_MAX_WATCHES: Final = 10_000
DEFAULT_MAX_WINDOW: Final = 1000
DEFAULT_PROGRESS_INTERVAL: Final = 1.0
DEFAULT_IDLE_TIMEOUT: Final = 30.0
MAX_STREAM_FRAME_BYTES: Final = 1024 * 1024  # encoded events in one frame (a value is at most this)
SCAN_PER_PUMP: Final = 20_000  # history events one stream may examine per pump (narrow prefixes skip many)
MAX_WATCH_PAYLOAD: Final = MAX_KEY_BYTES + 128


@dataclass(frozen=True, slots=True)
class WatchOptions:
    max_watches: int = DEFAULT_MAX_WATCHES  # open streams per node
    max_window: int = DEFAULT_MAX_WINDOW  # a larger asked window is cut to this
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # a stream without an ack or keepalive this long is dropped

    def __post_init__(self) -> None:
        if self.max_watches < 1 or self.max_window < 1 or not 0 < self.progress_interval < self.idle_timeout:
            raise ValueError("max_watches and max_window must be >= 1, 0 < progress_interval < idle_timeout")


@dataclass(frozen=True, slots=True)
class WatchSpec:
    key: str
    prefix: bool
    start: int
    window: int
    prev_kv: bool = False


def encode_watch(key: str, prefix: bool, start: int, window: int, prev_kv: bool = False) -> bytes:
    spec: dict[str, Any] = {"key": key, "prefix": prefix, "start": start, "window": window}
    if prev_kv:  # only when asked, so that a node from before prev_kv serves every other watch
        spec["prev_kv"] = True
    return pack(spec)


def parse_watch(payload: bytes) -> WatchSpec:
    """Validate a WATCH payload; raises ValueError with the client-facing reason."""
    if len(payload) > MAX_WATCH_PAYLOAD:
        raise ValueError("watch request too large")
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception:
        raise ValueError("watch request is not msgpack") from None
    if type(obj) is not dict or set(obj) - {"prev_kv"} != {"key", "prefix", "start", "window"}:
        raise ValueError("watch request must be a map of key, prefix, start, window (and prev_kv)")
    key, prefix, start, window = obj["key"], obj["prefix"], obj["start"], obj["window"]
    prev_kv = obj.get("prev_kv", False)
    if type(prev_kv) is not bool:
        raise ValueError("watch prev_kv must be a bool")
    if type(key) is not str or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"watch key must be a str of at most {MAX_KEY_BYTES} bytes")
    if type(prefix) is not bool or (not key and not prefix):
        raise ValueError("watch prefix must be a bool, and a key watch needs a non-empty key")
    if type(start) is not int or not 0 <= start <= UINT64_MAX:
        raise ValueError("watch start must be a revision >= 0")
    if type(window) is not int or not 1 <= window <= UINT64_MAX:
        raise ValueError("watch window must be >= 1")
    return WatchSpec(key, prefix, start, window, prev_kv)


def parse_stream_id(payload: bytes, with_count: bool) -> tuple[int, int] | None:
    """A WATCH_CANCEL payload (an id) or a WATCH_ACK one ([id, count]); None if malformed."""
    if len(payload) > 32:
        return None
    try:
        obj = msgpack.unpackb(payload, raw=False)
    except Exception:
        return None
    if with_count:
        if type(obj) is list and len(obj) == 2 and all(type(x) is int and 0 <= x <= UINT64_MAX for x in obj):
            return obj[0], obj[1]
        return None
    return (obj, 0) if type(obj) is int and 0 <= obj <= UINT64_MAX else None


@dataclass(slots=True)
class _Watch(Generic[C]):
    conn: C
    src: NodeId
    stream: int
    spec: WatchSpec
    start: int  # the first revision it wants
    window: int
    cursor: int  # the history sequence number of the next event to examine
    last_sent: float | None  # None: a frame left since the last pump, time not yet known
    last_heard: float | None  # the last open or ack; None: since the last pump
    frames: int = 0  # STREAM frames sent
    sent: int = 0  # events sent on this stream
    acked: int = 0  # of them, consumed by the client (its latest WATCH_ACK)


class WatchRegistry(Generic[C]):
    """The open watch streams of one node; see the module docstring."""

    def __init__(
        self,
        node_id: NodeId,
        history: Callable[[], History],
        revision: Callable[[], int],
        send: Callable[[C, ClientResponse], None],
        options: WatchOptions | None = None,
    ) -> None:
        self._id = node_id
        self._history = history  # a callable: a restored replica may hold a new History
        self._revision = revision
        self._send = send
        self.options = options or WatchOptions()
        self._watches: dict[tuple[C, int], _Watch[C]] = {}
        self.ended: dict[str, int] = {"compacted": 0, "slow": 0, "cancelled": 0, "limit": 0, "idle": 0}
        # What the last pump saw, so a turn with nothing new and nothing due costs no walk of the streams:
        # the history (and its next sequence number) it reached, and the earliest progress or idle deadline.
        self._pumped: tuple[History | None, int] = (None, -1)
        self._due = float("-inf")  # -inf: pump walks every stream (a stream opened, acked or has more)

    def __len__(self) -> int:
        return len(self._watches)

    def describe(self) -> dict[str, Any]:
        return {"open": len(self._watches), "ended": dict(self.ended)}

    # --- requests -------------------------------------------------------------------------------------

    def open(self, req: ClientRequest, conn: C, spec: WatchSpec) -> None:
        key = (conn, req.req_id)
        self._watches.pop(key, None)  # the same id again: a retry; it starts over from what it asks
        if len(self._watches) >= self.options.max_watches:
            self.ended["limit"] += 1
            text = f"too many watches on this node (at most {self.options.max_watches})"
            self._frame(conn, req.src, req.req_id, Status.WATCH_CANCELLED, text.encode())
            return
        history = self._history()
        revision = self._revision()
        if spec.start and spec.start <= history.compact_revision:
            self.ended["compacted"] += 1
            self._compacted(conn, req.src, req.req_id, history.compact_revision, "revision compacted")
            return
        start = spec.start or revision + 1
        cursor = history.seq_for(start) if spec.start else history.next_seq
        window = min(spec.window, self.options.max_window)
        watch = _Watch(conn, req.src, req.req_id, spec, start, window, cursor, None, None)
        self._watches[key] = watch
        self._due = float("-inf")
        self._stream_frame(watch, self._through(watch, history), [])

    def cancel(self, conn: C, stream: int) -> None:
        watch = self._watches.pop((conn, stream), None)
        if watch is not None:
            self.ended["cancelled"] += 1
            self._frame(conn, watch.src, stream, Status.WATCH_CANCELLED, b"cancelled by the client")

    def ack(self, conn: C, stream: int, count: int) -> None:
        watch = self._watches.get((conn, stream))
        if watch is not None:
            watch.acked = max(watch.acked, min(count, watch.sent))
            watch.last_heard = None
            self._due = float("-inf")  # its credit may let it send what it held back

    # --- the loop's turn ------------------------------------------------------------------------------

    def pump(self, now: float) -> bool:
        """Send what every stream may send now; True if some stream has more to send at once."""
        history = self._history()
        end = history.next_seq
        if self._pumped == (history, end) and now < self._due:
            return False  # no new event, no stream opened or acked, no progress or idle deadline reached
        more = False
        # Streams at the same place in the history with the same filter get the same events: they are
        # collected and encoded once per pump (the fan-out case: many watchers of one prefix).
        shared: dict[tuple[int, str, bool, bool, int, int], tuple[bytes, int, int, int, bool]] = {}
        interval, idle = self.options.progress_interval, self.options.idle_timeout
        due = float("inf")
        for key, watch in list(self._watches.items()):
            if watch.last_heard is None:
                watch.last_heard = now
            elif now - watch.last_heard > idle:
                del self._watches[key]
                self.ended["idle"] += 1
                continue
            if watch.cursor < history.first_seq:
                del self._watches[key]
                self.ended["slow"] += 1
                reason = (
                    "the watcher fell behind this node's history window (too slow, or the node restarted)"
                )
                self._compacted(watch.conn, watch.src, watch.stream, history.compact_revision, reason)
                continue
            credit = min(watch.window - (watch.sent - watch.acked), end - watch.cursor)
            spec = watch.spec
            # A stream's start matters only while its cursor is on events older than it: streams opened
            # at different revisions share once they are all past their starts.
            start = (
                watch.start if watch.cursor < end and history.at(watch.cursor).revision < watch.start else 0
            )
            group = (watch.cursor, spec.key, spec.prefix, spec.prev_kv, start, credit)
            batch = shared.get(group)
            if batch is None:
                events, more_here = self._collect(watch, history, credit)
                tail = b"".join([msgpack_array_header(len(events)), *events])
                batch = (tail, len(events), watch.cursor, self._through(watch, history), more_here)
                shared[group] = batch
            else:
                watch.cursor = batch[2]
            tail, count, _, through, more_here = batch
            more = more or more_here
            if count:
                watch.sent += count
            elif watch.last_sent is None or now - watch.last_sent < interval:
                last = now if watch.last_sent is None else watch.last_sent  # None: stamped now, below
                due = min(due, watch.last_heard + idle, last + interval)
                continue
            self._send_frame(watch, through, tail)
            watch.last_sent = now
            due = min(due, watch.last_heard + idle, now + interval)
        for watch in self._watches.values():
            if watch.last_sent is None:
                watch.last_sent = now
        self._pumped = (history, end)
        self._due = float("-inf") if more else due
        return more

    def next_due(self) -> float:
        """When the next progress notification is due (inf without streams)."""
        due = [w.last_sent + self.options.progress_interval for w in self._watches.values() if w.last_sent]
        return min(due, default=float("inf"))

    # --- internals ------------------------------------------------------------------------------------

    def _collect(self, watch: _Watch[C], history: History, credit: int) -> tuple[list[bytes], bool]:
        """The events `watch` may be sent now (at most `credit`), its cursor moved past them."""
        events: list[bytes] = []
        size = 0
        spec = watch.spec
        end = history.next_seq
        scanned = 0
        while watch.cursor < end and len(events) < credit:
            if scanned == SCAN_PER_PUMP:
                return events, True
            event = history.at(watch.cursor)
            scanned += 1
            if event.revision >= watch.start and (
                event.key.startswith(spec.key) if spec.prefix else event.key == spec.key
            ):
                data = event.with_prev() if spec.prev_kv else event.data
                if events and size + len(data) > MAX_STREAM_FRAME_BYTES:
                    return events, True
                events.append(data)
                size += len(data)
            watch.cursor += 1
        return events, False

    def _through(self, watch: _Watch[C], history: History) -> int:
        if watch.cursor >= history.next_seq:
            return self._revision()
        return history.at(watch.cursor).revision - 1

    def _stream_frame(self, watch: _Watch[C], through: int, events: list[bytes]) -> None:
        self._send_frame(watch, through, b"".join([msgpack_array_header(len(events)), *events]))

    def _send_frame(self, watch: _Watch[C], through: int, tail: bytes) -> None:
        """A STREAM frame: its number, `through`, and `tail`, the encoded array of events."""
        body = b"".join([b"\x93", pack(watch.frames), pack(through), tail])
        watch.frames += 1
        self._frame(watch.conn, watch.src, watch.stream, Status.STREAM, body)

    def _compacted(self, conn: C, src: NodeId, stream: int, compact: int, reason: str) -> None:
        body = pack({"compact_revision": compact, "reason": reason})
        self._frame(conn, src, stream, Status.WATCH_COMPACTED, body)

    def _frame(self, conn: C, dst: NodeId, stream: int, status: Status, result: bytes) -> None:
        self._send(conn, ClientResponse(self._id, dst, stream, status, result, ""))
