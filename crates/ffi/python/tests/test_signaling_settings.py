"""The builder's signaling and ICE settings: `wss://` with a private CA,
fallback signaling URLs, relay-only ICE, and the errors for bad values.
Live tests run against the embedded test signaling server on loopback."""

import asyncio
import socket

import pytest

import tether
from conftest import CONNECTED, asynctest, snapshot, wait_for_state

A = tether.ActionKind
PROMPT_S = 20


def live_builder(url="wss://signal.example:443/ws"):
    """A complete live builder (nothing is contacted until the first snapshot)."""
    return tether.TetherNodeBuilder().signaling_url(url).peer_id("alice").token("t")


def dead_url():
    """A ws:// URL on a loopback port nobody listens on (bound, then freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws"


async def go_online(node):
    return await node.handle().network_path_changed(snapshot(1))


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("tls_ca_pem", "not a certificate", "tls_ca_pem: no certificate"),
        ("tls_ca_pem", "-----BEGIN CERTIFICATE-----\nMIIB\n", "tls_ca_pem"),
        ("tls_ca_path", "/nonexistent/ca.pem", "tls_ca_path: cannot read"),
        ("fallback_signaling_urls", ["http://b.example/ws"], "fallback_signaling_urls must start"),
        ("fallback_signaling_urls", ["wss://"], "fallback_signaling_urls: no host"),
        ("signaling_url", "https://a.example/ws", "signaling_url must start"),
    ],
)
def test_bad_values_fail_the_build_naming_the_setting(setting, value, message):
    builder = getattr(live_builder(), setting)(value)
    with pytest.raises(tether.TetherError.InvalidConfig, match=message):
        builder.build()


def test_a_directory_without_certificates_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no certificates here")
    with pytest.raises(tether.TetherError.InvalidConfig, match="holds no .pem or .crt"):
        live_builder().tls_ca_path(str(tmp_path)).build()


@asynctest
async def test_a_node_trusting_the_test_ca_connects_over_wss(tmp_path):
    server = await tether.start_test_signaling_server_tls()
    nodes = []
    try:
        assert server.url().startswith("wss://127.0.0.1:")
        ca = server.ca_pem()
        assert ca is not None and "BEGIN CERTIFICATE" in ca
        ca_file = tmp_path / "ca.pem"
        ca_file.write_text(ca)

        # One trusts the CA as text, the other as a file; both get through.
        alice = server.node_builder("alice").tls_ca_pem(ca).build()
        bob = server.node_builder("bob").tls_ca_path(str(ca_file)).build()
        nodes += [alice, bob]
        for node in (alice, bob):
            result = await go_online(node)
            assert result.action == A.RESTORE, str(result)
            # On a loaded machine the first TLS connect can outlast the
            # test preset's 3 s connect bound; recovery retries on its own.
            await wait_for_state(node, CONNECTED, timeout=PROMPT_S)
        await asyncio.wait_for(alice.connect_peer("bob"), PROMPT_S)
        await asyncio.wait_for(alice.send("bob", b"over wss"), PROMPT_S)
        message = await asyncio.wait_for(bob.receive(), PROMPT_S)
        assert (message.sender, message.payload) == ("alice", b"over wss")

        # Without the CA the handshake fails: a failed restore that says
        # why, not a hang.
        carol = server.node_builder("carol").build()
        nodes.append(carol)
        result = await go_online(carol)
        assert not result.success, str(result)
        assert "tls handshake" in (result.error_message or ""), result.error_message
        assert carol.state() != CONNECTED
    finally:
        for node in nodes:
            await node.shutdown()
        await server.shutdown()


@asynctest
async def test_a_plain_test_server_has_no_ca():
    server = await tether.start_test_signaling_server()
    try:
        assert server.ca_pem() is None
    finally:
        await server.shutdown()


@asynctest
async def test_a_dead_first_url_falls_back_to_a_live_one():
    server = await tether.start_test_signaling_server()
    nodes = []
    try:
        alice = (
            server.node_builder("alice")
            .signaling_url(dead_url())
            .fallback_signaling_urls([server.url()])
            .build()
        )
        bob = server.node_builder("bob").build()
        nodes += [alice, bob]
        for node in (alice, bob):
            result = await go_online(node)
            assert result.action == A.RESTORE, str(result)
            await wait_for_state(node, CONNECTED, timeout=PROMPT_S)
        # Signaling through the fallback carries the WebRTC negotiation.
        await asyncio.wait_for(alice.connect_peer("bob"), PROMPT_S)
        await asyncio.wait_for(alice.send("bob", b"via the fallback"), PROMPT_S)
        message = await asyncio.wait_for(bob.receive(), PROMPT_S)
        assert (message.sender, message.payload) == ("alice", b"via the fallback")
    finally:
        for node in nodes:
            await node.shutdown()
        await server.shutdown()


@asynctest
async def test_relay_only_without_a_turn_server_cannot_reach_a_peer():
    server = await tether.start_test_signaling_server()
    nodes = []
    try:
        # Relay-only ICE with no TURN server has no candidate to offer: the
        # node is online (signaling works) but no peer connection forms.
        alice = server.node_builder("alice").relay_only(True).build()
        bob = server.node_builder("bob").build()
        nodes += [alice, bob]
        for node in (alice, bob):
            await go_online(node)
            await wait_for_state(node, CONNECTED, timeout=PROMPT_S)
        with pytest.raises(tether.TetherError.PeerUnreachable):
            await asyncio.wait_for(alice.connect_peer("bob"), PROMPT_S)
        # relay_only(False) is the default: the same pair connects.
        dave = server.node_builder("dave").relay_only(False).build()
        nodes.append(dave)
        await go_online(dave)
        await wait_for_state(dave, CONNECTED, timeout=PROMPT_S)
        await asyncio.wait_for(dave.connect_peer("bob"), PROMPT_S)
    finally:
        for node in nodes:
            await node.shutdown()
        await server.shutdown()
