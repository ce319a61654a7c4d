"""A node whose input from a connection has stopped must survive the sender going away.

With ZMTP heartbeats on, libzmq 4.3.x asserts `!_io_error` and aborts the process when a heartbeat falls
due on a connection whose input is stopped and whose other end has closed it. The network-fault soak found
two ways to stop input:
- a full receive queue (seed 101: a node paused with SIGSTOP came back to a full peer queue and aborted
  when a peer restarted);
- a handed-over connection (the 30-minute soak, seed 2027: after a pause, a peer's frames still arrived on
  its old connection after its new one had taken its name, and the old one has no queue left to take them).
transport/endpoints.py now sets no ZMTP heartbeats (TCP keepalive and TCP_MAXRT find dead connections) and
keeps RCVHWM 0 on peer sockets. Each scenario runs in a child process, because the failure is an abort.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.util import REPO_ROOT, free_ports

_SCENARIO = """
import sys, time, zmq
from transport.endpoints import ClientPort, PeerMesh

kind, rx_port, tx_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = zmq.Context()
rx_url = f"tcp://127.0.0.1:{rx_port}"
# rx: a node whose loop reads nothing (it is behind); tx: a peer or a client that floods it, then goes away
if kind == "peer":
    rx = PeerMesh.open(ctx, "rx", rx_url, {}, max_frame=1 << 20)
    tx = PeerMesh.open(ctx, "tx", f"tcp://127.0.0.1:{tx_port}", {"rx": rx_url}, max_frame=1 << 20)
    send = lambda frame: tx.send("rx", frame)
    close = tx.close
else:
    rx = ClientPort.open(ctx, rx_url, max_frame=1 << 20)
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(rx_url)
    def send(frame):
        try:
            dealer.send(frame, flags=zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
    close = lambda: dealer.close(linger=0)
deadline = time.monotonic() + 20
sent = 0
while sent < 20000:  # far more than a receive queue of 1000 frames holds
    if send(b"y" * 100):
        sent += 1
    else:
        assert time.monotonic() < deadline, f"only {sent} frames could be sent"
        time.sleep(0.001)
time.sleep(0.5)  # let what can be delivered arrive (our queue is full, if it can fill)
close()
# What aborted the process came when the next heartbeat fell due (every second): watch a while.
time.sleep(3.0)
print("survived", flush=True)
"""


_HANDOVER_SCENARIO = """
import sys, time, zmq
from tests.integration.util import wait_until
from transport.endpoints import PeerMesh

rx_port, old_port, new_port = (int(a) for a in sys.argv[1:4])
ctx = zmq.Context()
rx_url = f"tcp://127.0.0.1:{rx_port}"
rx = PeerMesh.open(ctx, "rx", rx_url, {}, max_frame=1 << 20)

def heard(payload):  # receive until `payload` arrives from n3 (the router's turn also runs its handover)
    return wait_until(lambda: rx.router.poll(50) and rx.router.recv_multipart() == [b"n3", payload], 20.0,
                      f"{payload!r} from n3", 0.0)

old = PeerMesh.open(ctx, "n3", f"tcp://127.0.0.1:{old_port}", {"rx": rx_url}, max_frame=1 << 20)
wait_until(lambda: old.send("rx", b"old"), 20.0, "the old connection to take a frame", 0.01)
heard(b"old")
# The same member comes back on a new connection, which takes its name: the old one loses its queue ...
new = PeerMesh.open(ctx, "n3", f"tcp://127.0.0.1:{new_port}", {"rx": rx_url}, max_frame=1 << 20)
wait_until(lambda: new.send("rx", b"new"), 20.0, "the new connection to take a frame", 0.01)
heard(b"new")
# ... so frames still arriving on the old one stop its input, and then its other end closes it.
for _ in range(100):
    old.send("rx", b"x" * 100)
rx.router.poll(500)
old.close()
# The abort came when the old connection's next heartbeats fell due (every second): watch a while.
time.sleep(3.0)
new.send("rx", b"still here")
heard(b"still here")
print("survived", flush=True)
"""


def test_a_peer_still_sending_on_a_handed_over_connection_cannot_abort_the_node() -> None:
    ports = free_ports(3)
    proc = subprocess.run(
        [sys.executable, "-c", _HANDOVER_SCENARIO, *map(str, ports)],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0 and "survived" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("sender", ["peer", "client"])
def test_a_node_behind_on_its_traffic_survives_the_sender_leaving(sender: str) -> None:
    rx_port, tx_port = free_ports(2)
    proc = subprocess.run(
        [sys.executable, "-c", _SCENARIO, sender, str(rx_port), str(tx_port)],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "survived" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
