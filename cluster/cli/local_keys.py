"""The keys of a `cluster-local --secure` cluster: made once under DIR/keys and reused on every restart.

DIR/keys/n1.key, n1.key_secret, ...   one keypair per node (secret files mode 0600)
DIR/keys/peers                        member name -> public key file (cluster-node --curve-peers)
DIR/keys/clients/client.key           the admitted client keys (cluster-node --curve-clients)
DIR/keys/client.key_secret            the key cluster-ctl uses (its public half is in clients/)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.client.endpoints import node_name
from transport.curve import read_secret_key, write_keypair

KEYS_DIR = "keys"
CLIENT_NAME = "client"


@dataclass(frozen=True, slots=True)
class LocalKeys:
    folder: Path
    client_secret: Path  # the client's .key_secret
    server_spec: str  # URL=FILE,... for --server-public-key / ZRAFT_SERVER_PUBLIC_KEY

    def node_flags(self, i: int) -> list[str]:
        return [
            "--curve-secret-key", str(self.folder / f"{node_name(i)}.key_secret"),
            "--curve-peers", str(self.folder / "peers"),
            "--curve-clients", str(self.folder / "clients"),
        ]  # fmt: skip


def ensure_keys(data_dir: Path, nodes: int, endpoints: list[str]) -> LocalKeys:
    """Create whatever keys are missing (never replacing one) and describe where they are."""
    folder = data_dir / KEYS_DIR
    names = [node_name(i) for i in range(1, nodes + 1)]
    for name in [*names, CLIENT_NAME]:
        if not (folder / f"{name}.key_secret").exists():
            write_keypair(folder, name)
    (folder / "peers").write_text("".join(f"{name} = {name}.key\n" for name in names))
    clients = folder / "clients"
    clients.mkdir(exist_ok=True)
    client_public = read_secret_key(folder / f"{CLIENT_NAME}.key_secret").public
    (clients / f"{CLIENT_NAME}.key").write_bytes(client_public + b"\n")
    spec = ",".join(f"{url}={folder / (name + '.key')}" for url, name in zip(endpoints, names, strict=True))
    return LocalKeys(folder, folder / f"{CLIENT_NAME}.key_secret", spec)
