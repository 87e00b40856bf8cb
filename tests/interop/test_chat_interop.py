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

from harness import Chat, Server, Traffic, bounded, exactly_once_in_order, new_secret, token_for, wait_until
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
    """Runs a scenario with an overall guard; the guard firing is a failure
    even if something inside swallowed the cancellation."""
    async def guarded() -> None:
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if task not in done:
            task.cancel()
            await asyncio.wait({task}, timeout=10)
            raise AssertionError(f"the scenario did not finish within {timeout:.0f} s")
        task.result()
    asyncio.run(guarded())


async def scenario(tether_bin: str, logdir: Path, python_role: str,
                   body: Callable[[Run], Awaitable[None]], quirks: Optional[Quirks] = None,
                   follow_room: bool = True, chat_first: bool = False) -> None:
    """Runs `body` with the server, the Python peer and the chat up. The Python
    peer registers first (the chat finds it in `registered` `peers`), or with
    `chat_first` after the chat's first restore settled (the chat then learns
    of it by `peer_joined`)."""
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
    body_failed = False
    try:
        url = await server.start()
        peer = TetherPeer(py_id, url, token_for(secret, py_id), room=room, quirks=quirks,
                          follow_room=follow_room)
        chat = Chat(tether_bin, url, node_id, py_id, room, secret, logdir)
        if chat_first:
            await chat.start()
            await chat.wait(lambda: chat.state == "connected", CONNECT_BOUND,
                            "the chat to come online (alone in its room)")
        await peer.start()
        await wait_until(lambda: peer.signaling.up, 15, "the Python peer to register",
                         lambda: [peer.signaling.registered])
        if not chat_first:
            await chat.start()
        traffic = Traffic(chat, peer, node_id)
        await body(Run(chat, peer, node_id, py_id, traffic))
    except BaseException:
        body_failed = True
        if peer is not None:
            print("---- Python peer trace (last 80 lines) ----")
            print("\n".join(peer.lines[-80:]))
        if chat is not None:
            print("---- chat events (last 40) ----")
            print(chat.tail(40))
        print(f"(full logs in {logdir})")
        raise
    finally:
        failures: list[BaseException] = []
        for step, what, timeout in (
                (traffic.stop() if traffic else None, "stopping the traffic", 10),
                (chat.stop() if chat else None, "stopping tether chat", 30),
                (peer.stop() if peer else None, "stopping the Python peer", 15),
                (server.stop(), "stopping tether serve", 20)):
            if step is None:
                continue
            try:
                await bounded(step, what, timeout, logdir)
            except AssertionError as err:
                failures.append(err)
        if peer is not None:
            (logdir / "python-trace.log").write_text("\n".join(peer.lines) + "\n")
        root.removeHandler(handler)
        handler.close()
        if failures and not body_failed:
            raise failures[0]


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
        # And the Python peer's own signaling dies: it re-registers and drives
        # the renegotiation by its role (§11.4); the node sees `peer_joined`.
        mark = r.traffic.mark()
        registrations = r.peer.signaling.registrations
        await r.peer.signaling.sever()
        await wait_until(lambda: r.peer.signaling.registrations > registrations, RECOVER_BOUND,
                         "the Python peer to re-register", lambda: [r.peer.changed])
        await r.traffic.wait_flowing(mark, RECOVER_BOUND, "messages both ways after the Python peer's "
                                     "signaling came back", n=10)
        await finish(r)
        n = r.negotiator()
        r.peer.trace(f"done: channels opened {n.channel_opens}, offers sent {n.offers_sent}, "
                     f"answers sent {n.answers_sent}, ICE restarts {n.restarts_applied}, "
                     f"duplicates dropped {r.peer.stream(r.node_id).duplicates_dropped}")

    run(scenario(tether_bin, logdir, python_role, body), 200)


# ---------------------------------------------------------------------------
# The three bug cases of issue 13: the Python peer misbehaves on purpose.
# Allowed endings: recovered (messages flow again both ways), or the node
# reports the peer lost / not connected. Never "connected" with nothing
# flowing for STUCK_BOUND.

HELD = 2.0  # a "not connected" report must hold this long (restores blink for ms)


class Stuck(AssertionError):
    """The node said connected while nothing flowed for the whole bound: the
    failure the bug cases were written to catch (they were `xfail(raises=Stuck)`
    until the node implemented NEGOTIATION.md's P5 and P7)."""


async def outcome(r: Run, since: int, flowing: Callable[[], bool],
                  node_claims_connected: Callable[[], bool], what: str,
                  bound: float = STUCK_BOUND) -> str:
    """Waits up to `bound` for the node to recover (`flowing()`) or to report
    the pair not connected (held for HELD seconds). Fails when it claimed connected with nothing flowing all along."""
    not_connected_since: list[Optional[float]] = [None]

    def settled() -> Optional[str]:
        if flowing():
            return "recovered"
        now = time.monotonic()
        if node_claims_connected():
            not_connected_since[0] = None
        elif not_connected_since[0] is None:
            not_connected_since[0] = now
        elif now - not_connected_since[0] >= HELD:
            return "reported"
        return None

    try:
        result = await wait_until(settled, bound, what, lambda: [r.chat.changed, r.peer.changed],
                                  r.traffic.status)
    except AssertionError as err:
        states = [(e["_t"], e.get("state") or e.get("connected"), (e.get("detail") or {}).get("action")
                   if isinstance(e.get("detail"), dict) else None)
                  for e in r.chat.events[since:] if e.get("event") in ("state", "peer")]
        raise Stuck(f"{err}\nthe node's state and peer events since the fault: {states}") from None
    r.peer.trace(f"outcome: {result}")
    return result


async def both_ways_then_finish(r: Run) -> None:
    mark = r.traffic.mark()
    r.traffic.start()
    await r.traffic.wait_flowing(mark, RECOVER_BOUND, "messages both ways after the recovery", n=10)
    await finish(r)


def claims_connected(r: Run) -> Callable[[], bool]:
    return lambda: r.chat.state == "connected" and r.chat.peer_connected


def test_bug_a_connect_timeout_is_not_a_dead_end(tether_bin: str, logdir: Path) -> None:
    """The node connects because the Python peer joined its room
    (`peer_joined`, room following). The Python answerer ignores the node's
    offers until the node gives up (its `bye`), then answers any offer; it never asks for one itself (it does
    not want the connection), so only the node can recover the pair."""
    quirks = Quirks(ignore_offers=True)

    async def body(r: Run) -> None:
        await wait_until(lambda: r.peer.negotiators.get(r.node_id) and r.negotiator().offers_received,
                         CONNECT_BOUND, "the node's first offer", lambda: [r.peer.changed])
        since = len(r.chat.events)
        await wait_until(lambda: r.negotiator().byes_received, 25, "the node's bye after its connect timeout",
                         lambda: [r.peer.changed])
        quirks.ignore_offers = False
        mark = r.traffic.mark()
        await r.traffic.send_chat()
        # The pair never connected: the node claims it when its state is connected.
        result = await outcome(r, since, lambda: len(r.traffic.py_received()) > mark[0],
                               lambda: r.chat.state == "connected",
                               "the node to offer again, or to leave 'connected'")
        if result == "recovered":
            await both_ways_then_finish(r)

    run(scenario(tether_bin, logdir, "answerer", body, quirks=quirks, follow_room=False,
                 chat_first=True), 120)


def test_bug_b_restart_answered_by_a_new_pc(tether_bin: str, logdir: Path) -> None:
    """The node (offerer) restarts ICE on /handoff; the Python answerer
    answers that restart offer from a brand-new RTCPeerConnection, as a peer
    that lost its pc and ignores the restart marker would (§4.3). Its old pc
    vanishes without a word, and it never gives up on the new pc by itself
    (so only the node can end the dead pair). Otherwise it follows the
    documents."""
    quirks = Quirks(patient=True)

    async def body(r: Run) -> None:
        await r.connected()
        r.traffic.start()
        await r.traffic.wait_flowing((0, 0), RECOVER_BOUND, "the first messages both ways", n=10)
        quirks.restart_answer_from_new_pc = True
        mark, since = r.traffic.mark(), len(r.chat.events)
        event = await r.chat.command("handoff")
        r.peer.trace(f"/handoff: {event}")
        result = await outcome(r, since, lambda: r.traffic.flowed_since(mark, n=5), claims_connected(r),
                               "messages both ways after /handoff, or the node reporting the peer lost")
        if result == "recovered":
            await finish(r)

    run(scenario(tether_bin, logdir, "answerer", body, quirks=quirks), 120)


@pytest.mark.parametrize("trigger", ["sever", "handoff", "handoff-burst"])
@pytest.mark.parametrize("python_role", ["offerer", "answerer"])
def test_bug_c_both_sides_renegotiate_at_once(python_role: str, trigger: str, tether_bin: str,
                                              logdir: Path) -> None:
    """Both sides start a renegotiation at the same moment. `sever`: the node
    re-registers and drives by its role (§11.4) while the Python peer also
    renegotiates on the `peer_joined` (PROTOCOL.md's old wording, §7 last row).
    `handoff`: the node restarts ICE while the Python peer sends its own
    ICE-restart offer / `ice_restart` at once; `handoff-burst`: that four
    times in a row, 150 ms apart, without waiting. The Python offerer also
    supersedes its outstanding restart offer when asked again (today's
    behaviour, §6.3) instead of re-sending it."""
    quirks = Quirks(renegotiate_on_peer_joined=trigger == "sever",
                    supersede_outstanding_restart=python_role == "offerer")

    async def body(r: Run) -> None:
        await r.connected()
        r.traffic.start()
        await r.traffic.wait_flowing((0, 0), RECOVER_BOUND, "the first messages both ways", n=10)
        since = len(r.chat.events)
        if trigger == "sever":
            mark = r.traffic.mark()
            event = await r.chat.command("sever")
            r.peer.trace(f"/sever: {event}")
        else:
            for _ in range(4 if trigger == "handoff-burst" else 1):
                await r.peer.call(r.node_id, lambda n: n.renegotiate())
                await r.chat.line("/handoff")
                if trigger == "handoff-burst":
                    await asyncio.sleep(0.15)  # spacing the burst, not synchronisation
            mark = r.traffic.mark()
        result = await outcome(r, since, lambda: r.traffic.flowed_since(mark, n=5), claims_connected(r),
                               f"messages both ways after {trigger} with both sides renegotiating")
        if result == "recovered":
            await finish(r)

    run(scenario(tether_bin, logdir, python_role, body, quirks=quirks), 120)
