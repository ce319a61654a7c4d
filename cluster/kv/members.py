"""The MEMBER request of the client protocol: its payload, and the answer that lists the members.

A MEMBER request's payload is msgpack [op, name, peer_url, client_url], optionally followed by the
member's CURVE public key (Z85 text; add and update only), the key the nodes of a CURVE cluster connect
to it and admit it with (op: add, promote, remove, update; see actors/membership.py). The answer, once
the configuration that carries the change is committed, is {"ok": True, "index": its log index,
"members": [member records]}. The KV service (cluster/kv/service.py) proposes the change through
NodeActor.propose_change; Client.member_* send it.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from actors.membership import CHANGE_OPS, ConfigChange, Configuration

MAX_URL_CHARS = 512
# A Z85-encoded CURVE public key (the same form transport/curve.py checks; kv does not import transport).
_CURVE_KEY = re.compile(r"[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")


def encode_member_request(change: ConfigChange) -> bytes:
    fields = [change.op, change.name, change.peer_url, change.client_url]
    if change.curve_key:
        fields.append(change.curve_key)
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


def parse_member_request(payload: bytes) -> ConfigChange:
    """The change a MEMBER payload asks for; ValueError with a reason for anything else."""
    try:
        raw: Any = msgpack.unpackb(payload, raw=False, use_list=True)
    except Exception as exc:  # noqa: BLE001 - any undecodable payload is the client's error
        raise ValueError(f"undecodable member request: {exc}") from None
    if not (isinstance(raw, list) and len(raw) in (4, 5) and all(isinstance(x, str) for x in raw)):
        raise ValueError(
            "a member request is [op, name, peer_url, client_url(, curve_public_key)], all strings"
        )
    op, name, peer_url, client_url = raw[:4]
    curve_key = raw[4] if len(raw) == 5 else ""
    if curve_key and (op not in ("add", "update") or not _CURVE_KEY.fullmatch(curve_key)):
        raise ValueError("a CURVE public key is 40 characters of Z85 text, given with add or update only")
    if op not in CHANGE_OPS:
        raise ValueError(f"unknown member operation {op!r} (one of {', '.join(CHANGE_OPS)})")
    for what, url in (("peer URL", peer_url), ("client URL", client_url)):
        if len(url) > MAX_URL_CHARS or (url and not url.startswith("tcp://")):
            raise ValueError(f"{what} {url[:64]!r} is not a tcp:// URL of at most {MAX_URL_CHARS} chars")
    return ConfigChange(op, name, peer_url, client_url, curve_key)


def member_result(config: Configuration, index: int) -> bytes:
    members = [m.as_dict() for m in config.members]
    data: bytes = msgpack.packb({"ok": True, "index": index, "members": members}, use_bin_type=True)
    return data
