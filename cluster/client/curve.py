"""The client's CURVE settings: its own keypair and the public key of each node it may talk to.

Every node has its own keypair, so a client needs the public key of each node it connects to. The
`server_public_key` argument (Client, AsyncClient) and ZRAFT_SERVER_PUBLIC_KEY / --server-public-key (the
CLIs) take any of:

- one key (or the path of a .key file): used for every node, e.g. a client of one node;
- a mapping client URL -> key (or .key path);
- in text: comma-separated items, each `URL=KEY` / `URL=FILE`, or a bare KEY / FILE that applies to every
  URL not named.

A URL without a key is never connected to (discovery may learn URLs a client was not given keys for).
`curve_secret_key` is the client's Z85 secret key, or the path of its .key_secret file (cluster-ctl keygen).
Errors name what is wrong, never a key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from transport.curve import KeyFileError, public_of, read_public_key, read_secret_key

# What cluster/service's event sockets use as well (the service layer looks down to the client only)
from transport.curve import KeyPair as KeyPair
from transport.curve import client_options as client_options
from transport.curve import is_key as is_key
from transport.curve import key_text as key_text

SECRET_KEY_ENV = "ZRAFT_CURVE_SECRET_KEY"
SERVER_KEY_ENV = "ZRAFT_SERVER_PUBLIC_KEY"


@dataclass(frozen=True, slots=True)
class ClientCurve:
    pair: KeyPair
    server_keys: dict[str, bytes]  # client URL -> that node's public key
    default_server_key: bytes | None = None

    def server_key(self, url: str) -> bytes | None:
        return self.server_keys.get(url, self.default_server_key)

    def __repr__(self) -> str:
        return f"ClientCurve(public={self.pair.public.decode('ascii')}, servers={len(self.server_keys)})"


ServerKeys = str | bytes | Mapping[str, str | bytes]


def client_curve(
    curve_secret_key: str | bytes | None, server_public_key: ServerKeys | None
) -> ClientCurve | None:
    """The CURVE settings of a client, or None for plaintext; ValueError when they cannot be used."""
    if curve_secret_key is None and server_public_key is None:
        return None
    if curve_secret_key is None or server_public_key is None:
        raise ValueError("CURVE needs both curve_secret_key and server_public_key")
    try:
        pair = _secret(curve_secret_key)
        if isinstance(server_public_key, Mapping):
            keys = {url: _public(value) for url, value in server_public_key.items()}
            return ClientCurve(pair, keys)
        text = (
            server_public_key.decode("ascii", "replace")
            if isinstance(server_public_key, bytes)
            else server_public_key
        )
        return _from_text(pair, text)
    except KeyFileError as exc:
        raise ValueError(str(exc)) from None


def _from_text(pair: KeyPair, text: str) -> ClientCurve:
    keys: dict[str, bytes] = {}
    default: bytes | None = None
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item.startswith("tcp://") and "=" in item:
            url, value = item.split("=", 1)
            keys[url.strip()] = _public(value.strip())
        elif default is None:
            default = _public(item)
        else:
            raise ValueError("server public keys: more than one key without a URL")
    if not keys and default is None:
        raise ValueError("server public keys: none given")
    return ClientCurve(pair, keys, default)


def _secret(value: str | bytes) -> KeyPair:
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    if is_key(raw.strip()):
        try:
            return KeyPair(public_of(raw.strip()), raw.strip())
        except ValueError:
            raise ValueError("curve_secret_key is not a valid CURVE secret key") from None
    path = os.fsdecode(raw)
    if not os.path.exists(path):
        raise ValueError("curve_secret_key is neither a Z85 secret key nor an existing key file")
    return read_secret_key(path)


def _public(value: str | bytes) -> bytes:
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    if is_key(raw.strip()):
        return raw.strip()
    path = os.fsdecode(raw)
    if not os.path.exists(path):
        raise ValueError("a server public key is neither a Z85 key nor an existing key file")
    return read_public_key(path)


def curve_settings(
    curve_secret_key: str | None, server_public_key: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str | None, str | None]:
    """For the CLIs: (secret, server keys) from the flags first, else ZRAFT_CURVE_SECRET_KEY and
    ZRAFT_SERVER_PUBLIC_KEY; checked here so a mistake is a usage error (ValueError) before connecting."""
    env = os.environ if environ is None else environ
    secret = curve_secret_key or env.get(SECRET_KEY_ENV) or None
    servers = server_public_key or env.get(SERVER_KEY_ENV) or None
    client_curve(secret, servers)
    return secret, servers
