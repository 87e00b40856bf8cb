"""renew_token: a new signaling token for every later registration (the
expiry and park/unpark flow itself is tested in Rust, crates/node/tests/token.rs)."""

import pytest

import tether
from conftest import CONNECTED, asynctest, simulated_node, snapshot

A = tether.ActionKind


@asynctest
async def test_a_live_node_takes_a_renewed_token_and_reconnects_with_it():
    server = await tether.start_test_signaling_server()
    try:
        node = server.node_builder("alice").result_timeout_ms(20_000).build()
        result = await node.handle().network_path_changed(snapshot(1))
        assert result.action == A.RESTORE and result.success, str(result)

        with pytest.raises(tether.TetherError.InvalidArgument, match="token"):
            node.renew_token("")
        node.renew_token(server.token("alice"))
        # The renewed token is the one the next registration uses.
        result = await node.handle().force_reconnect(tether.ReconnectReason.MANUAL_RECONNECT)
        assert result.success, str(result)
        assert node.state() == CONNECTED

        await node.shutdown()
        with pytest.raises(tether.TetherError.ShutDown):
            node.renew_token(server.token("alice"))
    finally:
        await server.shutdown()


@asynctest
async def test_a_simulated_node_has_no_token_to_renew():
    async with simulated_node() as node:
        with pytest.raises(tether.TetherError.Unsupported, match="renew_token"):
            node.renew_token("a token")
