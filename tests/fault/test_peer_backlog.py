"""A node that is behind on its incoming traffic must survive the sender going away.

Found by the network-fault soak (seed 101: a node paused with SIGSTOP came back to a full peer queue and
aborted when a peer restarted): with ZMTP heartbeats on, libzmq 4.3.x asserts `!_io_error` and aborts the
process when a heartbeat falls due on a connection whose input is stopped (our receive queue is at its
high-water mark) and whose other end has closed it. transport/endpoints.py now never lets a peer socket's
receive queue fill (RCVHWM 0) and keeps heartbeats off the client port. Each scenario runs in a child
process, because the failure is an abort.
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
