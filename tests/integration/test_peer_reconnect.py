"""A peer that reconnects while its previous connection is still registered must be heard.

Found by the network-fault soak (seed 7): after partitions a leader probed two followers forever while
their answers vanished. Each follower's DEALER had reconnected before the leader's ROUTER dropped the old
connection; without ROUTER_HANDOVER libzmq never identifies the new connection, keeps it open, answers its
heartbeats, and delivers none of its frames. The peer ROUTER now hands the name to the newest connection.
"""

from __future__ import annotations

import time

import zmq

from tests.integration.util import free_ports, wait_until
from transport.endpoints import PeerMesh


def _receive(router: zmq.Socket[bytes], want: int, timeout: float) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        if router.poll(100):
            got.append(router.recv_multipart())
    return got


def test_a_peer_reconnecting_before_its_old_connection_is_dropped_is_heard() -> None:
    rx_port, old_port, new_port = free_ports(3)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    rx_url = f"tcp://127.0.0.1:{rx_port}"
    rx = PeerMesh.open(ctx, "n1", rx_url, {}, max_frame=1 << 20)
    old = PeerMesh.open(ctx, "n3", f"tcp://127.0.0.1:{old_port}", {"n1": rx_url}, max_frame=1 << 20)
    new: PeerMesh | None = None
    try:
        # IMMEDIATE: nothing is queued until the connection is up, so send until one is taken.
        wait_until(lambda: old.send("n1", b"old"), 10.0, "the first connection to take a frame", 0.01)
        assert _receive(rx.router, 1, 10.0) == [[b"n3", b"old"]]
        # The same member comes back on a new connection while the old one is still registered.
        new = PeerMesh.open(ctx, "n3", f"tcp://127.0.0.1:{new_port}", {"n1": rx_url}, max_frame=1 << 20)
        wait_until(lambda: new.send("n1", b"new-0"), 10.0, "the second connection to take a frame", 0.01)
        old.close()
        for i in range(1, 3):
            new.send("n1", f"new-{i}".encode())
        got = _receive(rx.router, 3, 10.0)
        assert got == [[b"n3", f"new-{i}".encode()] for i in range(3)]
    finally:
        for mesh in (rx, old, new):
            if mesh is not None:
                mesh.close()
        ctx.term()
