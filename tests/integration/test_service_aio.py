"""AsyncClusterService against a real 3-node cluster: asyncio registrants register, see each other, exchange
events with acks (a sync and an async listener), and one whose client dies is marked OFFLINE once its lease
ends, as watched through `async for change in svc.changes()`; the loop keeps running throughout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from cluster.client.aio import AsyncClient
from cluster.service import OFFLINE, ONLINE, AsyncClusterService, Event
from tests.integration.service_util import INTERVAL, TIMEOUT
from tests.integration.util import start_cluster, wait_for_leader

pytestmark = pytest.mark.integration


def test_async_services_register_exchange_events_and_see_a_dead_registrant_go_offline() -> None:
    with start_cluster(3) as cluster:
        wait_for_leader(cluster)
        urls = [n.client_url for n in cluster.nodes]
        asyncio.run(scenario(urls))


async def scenario(urls: list[str]) -> None:
    timing: dict[str, Any] = {"interval": INTERVAL, "timeout": TIMEOUT, "grace": 60.0}
    async with (
        AsyncClient(urls, timeout=10.0) as ca,
        AsyncClient(urls, timeout=10.0) as cb,
        AsyncClient(urls, timeout=10.0) as cc,
    ):
        web, intp = AsyncClusterService(ca, **timing), AsyncClusterService(cb, **timing)
        doomed = AsyncClusterService(cc, **timing)
        ticks = 0

        async def ticker() -> None:  # counts only if the loop is never held by the service
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        try:
            notes: list[Any] = []
            reloads: list[Any] = []

            async def on_note(event: Event) -> None:
                await asyncio.sleep(0)
                notes.append((event.payload, event.sender))

            intp.subscribe("NOTE", on_note)
            web.subscribe("RELOAD", lambda event: reloads.append(event.payload))
            await web.register_server("web-1", "127.0.0.1", 8081)
            await doomed.register_server("web-9", "127.0.0.1", 8089, meta={"ZONE": "b"})
            fut = await intp.register_process("spark", "intp-1", "127.0.0.1", 9001, wait=False)
            await asyncio.wait_for(fut, 20.0)
            assert [(s["NODE_NAME"], s["STATUS"]) for s in await web.servers()] == [
                ("web-1", ONLINE),
                ("web-9", ONLINE),
            ]
            [proc] = await web.processes()
            assert (proc["INTP_PROCESS_NAME"], proc["INTP_TSERVER_PORT"]) == ("intp-1", 9001)
            assert (await intp.get("server", "web-9") or {}).get("ZONE") == "b"
            await web.update("server", "web-1", {"INTP_PROCESS_LIST": ["intp-1"]})
            assert (await intp.get("server", "web-1") or {}).get("INTP_PROCESS_COUNT") == 1

            result = await web.broadcast("NOTE", {"note": "2F7"}, timeout=5.0)
            assert result.ok and result.acked == ["INTP_PROCESS_META/intp-1", "SERVER_META/web-9"], result
            assert notes == [({"note": "2F7"}, "SERVER_META/web-1")]
            result = await intp.unicast("web-1", "RELOAD", 1, timeout=5.0)
            assert result.ok and result.acked == ["SERVER_META/web-1"] and reloads == [1]

            # web-9's application dies (its client closes): no renewals, its lease ends by the leader's clock.
            changes = web.changes()
            await cc.close()
            killed = time.monotonic()
            async with asyncio.timeout(TIMEOUT + 15.0):
                async for change in changes:
                    if change["id"] == "web-9" and (change["record"] or {}).get("STATUS") == OFFLINE:
                        break
            print(f"async registrant OFFLINE {time.monotonic() - killed:.2f}s after its client closed")
            await changes.aclose()
            record = await web.get("server", "web-9")
            assert record is not None and (record["SERVER_PORT"], record["ZONE"]) == (8089, "b")
            assert (await web.get("server", "web-1") or {}).get("STATUS") == ONLINE
            health = await web.health()
            assert health["quorum"] is True and health["failed_writes"] == []
            assert ticks > 0
        finally:
            ticking.cancel()
            for svc in (doomed, intp, web):
                await svc.close(timeout=5.0)
        # the closed services deleted their own records
        async with AsyncClient(urls, timeout=10.0) as check:
            assert (
                await check.get("SERVER_META/web-1") is None
                and await check.get("INTP_PROCESS_META/intp-1") is None
            )
