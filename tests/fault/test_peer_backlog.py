"""A node that is behind on its peer traffic must survive a peer going away.

Found by the network-fault soak (seed 101: a node paused with SIGSTOP came back to a full peer queue and
aborted when a peer restarted): with ZMTP heartbeats on, libzmq 4.3.x asserts `!_io_error` and aborts the
process when a heartbeat falls due on a connection whose input is stopped (our receive queue is full) and
whose peer has closed it. transport/endpoints.py now leaves dead-peer detection to TCP keepalive and
TCP_MAXRT. The scenario runs in a child process, because the failure is an abort.
"""

from __future__ import annotations

import subprocess
import sys

from tests.integration.util import REPO_ROOT, free_ports

_SCENARIO = """
import sys, time, zmq
from transport.endpoints import PeerMesh

rx_port, tx_port = int(sys.argv[1]), int(sys.argv[2])
ctx = zmq.Context()
# rx: a node whose loop reads nothing (it is behind); tx: a peer that floods it and then goes away
rx = PeerMesh.open(ctx, "rx", f"tcp://127.0.0.1:{rx_port}", {}, max_frame=1 << 20)
tx = PeerMesh.open(ctx, "tx", f"tcp://127.0.0.1:{tx_port}", {"rx": f"tcp://127.0.0.1:{rx_port}"},
                   max_frame=1 << 20)
deadline = time.monotonic() + 10
while not tx.send("rx", b"hello"):  # connected?
    assert time.monotonic() < deadline, "never connected"
    time.sleep(0.01)
while tx.send("rx", b"y" * 100) or tx.stats.sent < 3000:  # until every queue on the way is full
    assert time.monotonic() < deadline, "the receiver's queue never filled"
tx.close()
# What aborted the process before came when the next heartbeat fell due (every second): watch a while.
time.sleep(3.0)
print("survived", flush=True)
"""


def test_a_node_behind_on_peer_traffic_survives_a_peer_leaving() -> None:
    rx_port, tx_port = free_ports(2)
    proc = subprocess.run(
        [sys.executable, "-c", _SCENARIO, str(rx_port), str(tx_port)],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "survived" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
