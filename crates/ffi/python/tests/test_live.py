"""Two live nodes (signaling + WebRTC + reliable messaging) against the
embedded test signaling server, on loopback only."""

import asyncio
import contextlib
import gc
import threading

import pytest

import tether
from conftest import CONNECTED, StateRecorder, asynctest, snapshot, wait_for_state, wait_until

A = tether.ActionKind
# WebRTC connects and restarts take seconds on a loaded machine.
PROMPT_S = 20


@contextlib.asynccontextmanager
async def live_pair():
    """alice and bob, online and connected to each other."""
    server = await tether.start_test_signaling_server()
    nodes = []
    try:
        for peer in ("alice", "bob"):
            # Generous: a reconnect on a loaded CI machine can take seconds.
            node = server.node_builder(peer).result_timeout_ms(PROMPT_S * 1000).build()
            nodes.append(node)
            result = await node.handle().network_path_changed(snapshot(1))
            assert result.action == A.RESTORE and result.success, str(result)
            assert node.state() == CONNECTED
        alice, bob = nodes
        await alice.connect_peer("bob")
        yield server, alice, bob
    finally:
        for node in nodes:
            if not node.is_shut_down():
                await node.shutdown()
        await server.shutdown()


async def receive_texts(node, count):
    """The next `count` messages `node` receives, as (sender, text)."""
    received = []
    for _ in range(count):
        message = await asyncio.wait_for(node.receive(), PROMPT_S)
        received.append((message.sender, message.payload.decode()))
    return received


async def exchange(alice, bob, label, count=5):
    """Posts `count` numbered messages each way and checks that each side
    receives exactly those, in order."""
    for i in range(count):
        await alice.post("bob", f"{label}:a{i}".encode())
        await bob.post("alice", f"{label}:b{i}".encode())
    assert await receive_texts(bob, count) == [("alice", f"{label}:a{i}") for i in range(count)]
    assert await receive_texts(alice, count) == [("bob", f"{label}:b{i}") for i in range(count)]


@asynctest
async def test_two_nodes_exchange_messages_across_recoveries():
    async with live_pair() as (server, alice, bob):
        assert server.url().startswith("ws://127.0.0.1:")
        # send waits for the peer's acknowledgement.
        await asyncio.wait_for(alice.send("bob", b"hello bob"), PROMPT_S)
        assert await receive_texts(bob, 1) == [("alice", "hello bob")]
        assert "bob" in alice.connected_peers()
        # On loopback without TURN, ICE selected a direct host pair.
        route = await alice.peer_route("bob")
        assert route is not None and route.local.candidate_type == "host", route
        assert not route.relayed and route.local.protocol == "udp"
        assert await alice.peer_route("nobody") is None
        await exchange(alice, bob, "warm")

        # A forced reconnect rebuilds everything; the listener shows it.
        recorder = StateRecorder()
        alice.subscribe_state(recorder)
        await recorder.wait_for(lambda s: s == [CONNECTED])
        result = await alice.handle().force_reconnect(tether.ReconnectReason.MANUAL_RECONNECT)
        assert result.action == A.RECONNECT and result.success, str(result)
        states = await recorder.wait_for(lambda s: len(s) >= 3 and s[-1] == CONNECTED)
        assert tether.ConnectionState.RECOVERING(action=A.RECONNECT, attempt=1) in states
        await exchange(alice, bob, "after-reconnect")

        # A handoff to cellular restores (ICE restart) without losing anything.
        handoff = snapshot(2, transports=[tether.Transport.CELLULAR], is_expensive=True)
        result = await bob.handle().network_path_changed(handoff)
        assert result.action == A.RESTORE and result.success, str(result)
        await exchange(alice, bob, "after-handoff")

        # Signaling dies on its own: the node notices and restores it.
        assert alice.simulate_signaling_loss()
        await wait_for_state(alice, CONNECTED, timeout=PROMPT_S)
        await exchange(alice, bob, "after-signaling-loss")

        # Nothing arrived twice.
        assert alice.try_receive() is None and bob.try_receive() is None

        report = await alice.shutdown()
        assert report.cleanup_error is None, report.cleanup_error


class PeerRecorder(tether.PeerStateListener):
    """A peer-state listener that records every list it is given."""

    def __init__(self):
        self._lock = threading.Lock()
        self.lists = []

    def on_peer_states_changed(self, peers):
        with self._lock:
            self.lists.append(peers)

    def last(self):
        with self._lock:
            return self.lists[-1] if self.lists else None


def bob_connected(recorder, connected):
    last = recorder.last() or []
    return any(p.peer == "bob" and p.connected == connected for p in last)


@asynctest
async def test_the_peer_state_listener_follows_a_dropped_peer_connection():
    async with live_pair() as (server, alice, bob):
        recorder = PeerRecorder()
        subscription = alice.subscribe_peer_states(recorder)
        await wait_until(lambda: bob_connected(recorder, True), "bob connected", PROMPT_S)
        (status,) = [p for p in alice.peer_states() if p.peer == "bob"]
        assert status.connection == tether.PeerConnectionState.CONNECTED, str(status)
        first = status.generation

        # Dropped: the node restores it, on a new peer connection.
        await alice.simulate_peer_loss("bob")
        await wait_until(
            lambda: any(p.peer == "bob" and p.connected and p.generation > first
                        for p in recorder.last() or []),
            "bob connected again on a new peer connection",
            PROMPT_S,
        )
        await exchange(alice, bob, "after-drop", count=2)

        await alice.shutdown()
        await wait_until(lambda: bob_connected(recorder, False), "bob closed", PROMPT_S)
        await wait_until(lambda: not subscription.is_active(), "the subscription ended")


@asynctest
async def test_messaging_errors_are_clear_exceptions():
    async with live_pair() as (server, alice, bob):
        with pytest.raises(tether.TetherError.InvalidArgument, match="peer"):
            await alice.post("", b"to nobody")
        with pytest.raises(tether.TetherError.InvalidArgument, match="peer"):
            await alice.send("alice", b"to myself")
        with pytest.raises(tether.TetherError.InvalidArgument, match="limit"):
            await alice.post("bob", bytes(70_000))
        with pytest.raises(TypeError):
            await alice.post("bob", "text, not bytes")

        # After a logout nothing is accepted until a manual reconnect.
        await alice.handle().cleanup_connections(tether.CleanupReason.USER_LOGOUT)
        with pytest.raises(tether.TetherError.ConnectionsClosed):
            await alice.post("bob", b"while logged out")
        result = await alice.handle().force_reconnect(tether.ReconnectReason.MANUAL_RECONNECT)
        assert result.success, str(result)
        await alice.connect_peer("bob")
        await exchange(alice, bob, "after-logout", count=2)

        await bob.shutdown()
        with pytest.raises(tether.TetherError.ShutDown):
            await bob.post("alice", b"from the grave")
        with pytest.raises(tether.TetherError.ShutDown):
            await bob.receive()
        with pytest.raises(tether.TetherError.ShutDown):
            await bob.handle().force_reconnect(tether.ReconnectReason.MANUAL_RECONNECT)

    # The server is gone too: no more tokens.
    with pytest.raises(tether.TetherError.ShutDown):
        server.token("carol")


@asynctest
async def test_builder_and_server_validate_input():
    server = await tether.start_test_signaling_server()
    try:
        assert server.token("carol").startswith("v1.")
        with pytest.raises(tether.TetherError.InvalidArgument, match="peer"):
            server.token("")
        with pytest.raises(tether.TetherError.InvalidConfig, match="send_deadline_ms"):
            server.node_builder("carol").send_deadline_ms(0).build()
        with pytest.raises(tether.TetherError.InvalidConfig):
            server.node_builder("carol").peer_id("not a valid id!").build()
        # A live node before its first snapshot has not connected yet.
        node = server.node_builder("carol").build()
        assert node.connected_peers() == []
        await node.shutdown()
    finally:
        await server.shutdown()


@asynctest
async def test_a_simulated_node_has_no_messaging():
    node = (
        tether.TetherNodeBuilder()
        .simulated(tether.SimulatedEffects(duration_ms=5))
        .build()
    )
    try:
        with pytest.raises(tether.TetherError.Unsupported, match="live node"):
            await node.post("bob", b"hi")
        with pytest.raises(tether.TetherError.Unsupported):
            await node.receive()
        with pytest.raises(tether.TetherError.Unsupported):
            await node.connect_peer("bob")
        assert node.connected_peers() == []
        assert node.peer_states() == []
        with pytest.raises(tether.TetherError.Unsupported):
            node.subscribe_peer_states(PeerRecorder())
    finally:
        await node.shutdown()


@asynctest
async def test_a_live_node_dropped_without_shutdown_does_not_crash():
    server = await tether.start_test_signaling_server()
    try:
        node = server.node_builder("dave").build()
        handle = node.handle()
        assert (await handle.network_path_changed(snapshot(1))).success
        del node
        gc.collect()
        deadline = asyncio.get_running_loop().time() + PROMPT_S
        while not handle.is_shut_down():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    finally:
        await server.shutdown()
