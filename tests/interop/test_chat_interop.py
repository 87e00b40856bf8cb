"""`tether chat` against a Python peer built from docs/NEGOTIATION.md,
docs/PROTOCOL.md and docs/MESSAGING.md only (tether_peer, on aiortc).

Each test starts `tether serve` on a free loopback port, the Python peer,
and `tether chat --json` driven through stdin, in a room of its own. Peer ids
pick the roles: the byte-wise smaller id offers (NEGOTIATION.md §2).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Optional

import pytest

from harness import Chat, Server, Traffic, exactly_once_in_order, new_secret, token_for, wait_until
from tether_peer import Quirks, TetherPeer

# Peer ids by the Python peer's role: "a-…" < "b-…".
IDS = {"offerer": ("a-py", "b-node"), "answerer": ("b-py", "a-node")}

CONNECT_BOUND = 30.0  # first connect, both sides
RECOVER_BOUND = 30.0  # traffic both ways again after a fault
DRAIN_BOUND = 30.0  # everything sent delivered at the end
# The bug cases: how long the node may say "connected" while nothing flows.
STUCK_BOUND = 20.0


@dataclass
class Run:
    chat: Chat
    peer: TetherPeer
    node_id: str
    py_id: str
    traffic: Traffic

    async def connected(self) -> None:
        """Both sides say the pair is connected: the chat's `peer` event and the
        Python peer's open channel."""
        await self.chat.wait(lambda: self.chat.peer_connected, CONNECT_BOUND,
                             "the chat to report the Python peer connected")
        await wait_until(lambda: self.peer.healthy(self.node_id), CONNECT_BOUND,
                         "the Python peer's channel to open", lambda: [self.peer.changed])

    def negotiator(self):
        return self.peer.negotiators[self.node_id]


def run(coro: Awaitable[None], timeout: float) -> None:
    async def guarded() -> None:
        await asyncio.wait_for(coro, timeout)
    asyncio.run(guarded())


async def scenario(tether_bin: str, logdir: Path, python_role: str,
                   body: Callable[[Run], Awaitable[None]], quirks: Optional[Quirks] = None,
                   follow_room: bool = True) -> None:
    py_id, node_id = IDS[python_role]
    secret = new_secret()
    room = f"interop-{secrets.token_hex(4)}"
    handler = logging.FileHandler(logdir / "python-peer.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("aiortc", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server = Server(tether_bin, secret, logdir)
    peer: Optional[TetherPeer] = None
    chat: Optional[Chat] = None
    traffic: Optional[Traffic] = None
    try:
        url = await server.start()
        peer = TetherPeer(py_id, url, token_for(secret, py_id), room=room, quirks=quirks,
                          follow_room=follow_room)
        await peer.start()
        await wait_until(lambda: peer.signaling.up, 15, "the Python peer to register",
                         lambda: [peer.signaling.registered])
        chat = Chat(tether_bin, url, node_id, py_id, room, secret, logdir)
        await chat.start()
        traffic = Traffic(chat, peer, node_id)
        await body(Run(chat, peer, node_id, py_id, traffic))
    except BaseException:
        if peer is not None:
            print("---- Python peer trace (last 80 lines) ----")
            print("\n".join(peer.lines[-80:]))
        if chat is not None:
            print("---- chat events (last 40) ----")
            print(chat.tail(40))
        print(f"(full logs in {logdir})")
        raise
    finally:
        if traffic is not None:
            await traffic.stop()
        if chat is not None:
            await chat.stop()
        if peer is not None:
            await peer.stop()
            (logdir / "python-trace.log").write_text("\n".join(peer.lines) + "\n")
        await server.stop()
        root.removeHandler(handler)
        handler.close()


async def finish(r: Run) -> None:
    """Stops the traffic, waits for everything to arrive, and checks it arrived
    exactly once, in order, both ways."""
    await r.traffic.stop()
    await r.traffic.wait_all_delivered(DRAIN_BOUND)
    assert not r.chat.refused(), f"the chat refused messages: {r.chat.refused()[:5]}"
    exactly_once_in_order(r.traffic.n2p, r.traffic.py_received(), "node -> python")
    exactly_once_in_order(r.traffic.p2n, r.chat.received(), "python -> node")


# ---------------------------------------------------------------------------
# Every fault of `tether chat`, in both roles.


@pytest.mark.parametrize("python_role", ["offerer", "answerer"])
def test_messages_survive_every_fault(python_role: str, tether_bin: str, logdir: Path) -> None:
    async def body(r: Run) -> None:
        await r.connected()
        r.traffic.start()
        await r.traffic.wait_flowing((0, 0), RECOVER_BOUND, "the first messages both ways", n=10)
        for command in ("sever", "reconnect", "drop", "handoff"):
            mark = r.traffic.mark()
            event = await r.chat.command(command)
            assert event.get("ok"), f"/{command} failed: {event}"
            await r.traffic.wait_flowing(mark, RECOVER_BOUND, f"messages both ways after /{command}", n=10)
        await finish(r)
        n = r.negotiator()
        r.peer.trace(f"done: channels opened {n.channel_opens}, offers sent {n.offers_sent}, "
                     f"answers sent {n.answers_sent}, ICE restarts {n.restarts_applied}, "
                     f"duplicates dropped {r.peer.stream(r.node_id).duplicates_dropped}")

    run(scenario(tether_bin, logdir, python_role, body), 200)
