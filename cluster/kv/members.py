"""The MEMBER request of the client protocol: its payload, and the answer that lists the members.

A MEMBER request's payload is msgpack [op, name, peer_url, client_url] (op: add, promote, remove,
update; see actors/membership.py); the answer, once the configuration that carries the change is
committed, is {"ok": True, "index": its log index, "members": [member records]}. The KV service
(cluster/kv/service.py) proposes the change through NodeActor.propose_change; Client.member_* send it.
"""

from __future__ import annotations

from typing import Any

import msgpack

from actors.membership import CHANGE_OPS, ConfigChange, Configuration

MAX_URL_CHARS = 512


def encode_member_request(change: ConfigChange) -> bytes:
    data: bytes = msgpack.packb(
        [change.op, change.name, change.peer_url, change.client_url], use_bin_type=True
    )
    return data


def parse_member_request(payload: bytes) -> ConfigChange:
    """The change a MEMBER payload asks for; ValueError with a reason for anything else."""
    try:
        raw: Any = msgpack.unpackb(payload, raw=False, use_list=True)
    except Exception as exc:  # noqa: BLE001 - any undecodable payload is the client's error
        raise ValueError(f"undecodable member request: {exc}") from None
    if not (isinstance(raw, list) and len(raw) == 4 and all(isinstance(x, str) for x in raw)):
        raise ValueError("a member request is [op, name, peer_url, client_url], all strings")
    op, name, peer_url, client_url = raw
    if op not in CHANGE_OPS:
        raise ValueError(f"unknown member operation {op!r} (one of {', '.join(CHANGE_OPS)})")
    for what, url in (("peer URL", peer_url), ("client URL", client_url)):
        if len(url) > MAX_URL_CHARS or (url and not url.startswith("tcp://")):
            raise ValueError(f"{what} {url[:64]!r} is not a tcp:// URL of at most {MAX_URL_CHARS} chars")
    return ConfigChange(op, name, peer_url, client_url)


def member_result(config: Configuration, index: int) -> bytes:
    members = [m.as_dict() for m in config.members]
    data: bytes = msgpack.packb({"ok": True, "index": index, "members": members}, use_bin_type=True)
    return data
