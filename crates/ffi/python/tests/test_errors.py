"""Invalid input and misuse get clear Python exceptions, never a crash."""

import asyncio
import gc

import pytest

import tether
from conftest import (
    ACTION_NEVER_ENDS_MS,
    BACKGROUND,
    asynctest,
    foreground,
    recovering,
    simulated_node,
    snapshot,
    wait_for_state,
    wait_until,
)


@asynctest
async def test_negative_background_duration_is_an_invalid_argument():
    async with simulated_node() as node:
        handle = node.handle()
        with pytest.raises(tether.TetherError.InvalidArgument) as raised:
            await handle.app_lifecycle_changed(foreground(-1))
        assert str(raised.value) == (
            "invalid argument AppLifecycleState.Foreground.background_duration_ms: "
            "must not be negative (got -1)"
        )
        assert isinstance(raised.value, tether.TetherError)
        # Nothing reached the node, which goes on working.
        assert (await handle.app_lifecycle_changed(BACKGROUND)).success


@asynctest
async def test_negative_sequence_is_an_invalid_argument_everywhere():
    async with simulated_node() as node:
        handle = node.handle()
        with pytest.raises(tether.TetherError.InvalidArgument, match="NetworkSnapshot.sequence"):
            await handle.network_path_changed(snapshot(-5))
        bad_event = tether.NetworkEvent.NETWORK_PATH_CHANGED(snapshot=snapshot(-1))
        with pytest.raises(tether.TetherError.InvalidArgument, match="must not be negative"):
            await handle.submit(bad_event)
        bad_event = tether.NetworkEvent.APP_LIFECYCLE_CHANGED(state=foreground(-30_000))
        with pytest.raises(tether.TetherError.InvalidArgument, match="background_duration_ms"):
            await handle.submit(bad_event)


@asynctest
async def test_values_python_cannot_lower_raise_python_errors():
    async with simulated_node() as node:
        handle = node.handle()
        with pytest.raises(TypeError):
            await handle.network_path_changed(snapshot("1"))
        with pytest.raises(ValueError):
            await handle.network_path_changed(snapshot(1, path_id=2**64))
        with pytest.raises(ValueError):
            await handle.cleanup_connections("user_logout")
        assert (await handle.network_path_changed(snapshot(1))).success


@asynctest
async def test_a_handle_after_shutdown_fails_fast():
    # A result timeout far beyond the test's bound: a call that waited for an
    # answer instead of failing at once would fail the test by its timeout.
    async with simulated_node(result_timeout_ms=600_000) as node:
        handle = node.handle()
        await handle.network_path_changed(snapshot(1))
        await node.shutdown()
    assert node.is_shut_down() and handle.is_shut_down()
    calls = [
        lambda: handle.network_path_changed(snapshot(2)),
        lambda: handle.app_lifecycle_changed(BACKGROUND),
        lambda: handle.cleanup_connections(tether.CleanupReason.MANUAL_RESET),
        lambda: handle.force_reconnect(tether.ReconnectReason.MANUAL_RECONNECT),
        lambda: handle.submit(tether.NetworkEvent.APP_LIFECYCLE_CHANGED(state=BACKGROUND)),
        lambda: node.handle().force_reconnect(tether.ReconnectReason.MANUAL_RECONNECT),
    ]
    for call in calls:
        with pytest.raises(tether.TetherError.ShutDown, match="the node is shut down"):
            await call()
    with pytest.raises(tether.TetherError.ShutDown):
        await node.shutdown()
    with pytest.raises(tether.TetherError.ShutDown):
        node.subscribe_state(tether.StateListener())
    with pytest.raises(tether.TetherError.ShutDown):
        node.simulate_signaling_loss()


@asynctest
async def test_shutdown_answers_the_caller_of_the_running_action():
    async with simulated_node(duration_ms=ACTION_NEVER_ENDS_MS, shutdown_timeout_ms=100) as node:
        handle = node.handle()
        waiting = asyncio.ensure_future(handle.network_path_changed(snapshot(1)))
        # The restore runs (and cannot end on its own before the shutdown).
        await wait_for_state(node, recovering(tether.ActionKind.RESTORE))
        report = await node.shutdown()
        # The running restore is cancelled, not waited for; its caller hears so.
        result = await waiting
        assert result.action == tether.ActionKind.RESTORE and not result.success
        assert result.error == tether.EventError.CANCELLED(action=tether.ActionKind.RESTORE)
        assert result.error_message == "restore was cancelled"
        # It was answered with its result, not with a shutdown error; the
        # final cleanup (scripted to outlast the test) hit the 100 ms
        # shutdown bound.
        assert report.callers_answered == 0
        assert report.cleanup_error is not None


@asynctest
async def test_result_timeout_is_an_exception_and_the_work_goes_on():
    # The restore takes 20 times the result timeout.
    async with simulated_node(duration_ms=1_000, result_timeout_ms=50, shutdown_timeout_ms=100) as node:
        handle = node.handle()
        with pytest.raises(tether.TetherError.ResultTimeout, match="no result within 50 ms"):
            await handle.network_path_changed(snapshot(1))
        await wait_for_state(node, tether.ConnectionState.CONNECTED())


def test_builder_names_what_is_wrong():
    def simulated():
        return tether.TetherNodeBuilder().simulated(tether.SimulatedEffects())

    cases = [
        (tether.TetherNodeBuilder(), tether.TetherError.InvalidConfig, "signaling_url is required"),
        (
            tether.TetherNodeBuilder().signaling_url("http://example.test").peer_id("a").token("t"),
            tether.TetherError.InvalidConfig,
            "must start with ws:// or wss://",
        ),
        (
            tether.TetherNodeBuilder().signaling_url("ws://127.0.0.1:1").peer_id("a"),
            tether.TetherError.InvalidConfig,
            "token is required",
        ),
        (simulated().result_timeout_ms(0), tether.TetherError.InvalidConfig, "result_timeout_ms"),
        (simulated().shutdown_timeout_ms(-1), tether.TetherError.InvalidConfig, "shutdown_timeout_ms"),
        (simulated().policy(tether.Policy(jitter=1.5)), tether.TetherError.InvalidConfig, "jitter"),
        (
            simulated().policy(tether.Policy(offline_grace_ms=-400)),
            tether.TetherError.InvalidConfig,
            "offline_grace_ms",
        ),
        (
            tether.TetherNodeBuilder().simulated(tether.SimulatedEffects(duration_ms=-1)),
            tether.TetherError.InvalidConfig,
            "duration_ms",
        ),
        (
            tether.TetherNodeBuilder().simulated(
                tether.SimulatedEffects(
                    failures=[
                        tether.SimulatedFailure(
                            action=tether.ActionKind.PROBE, nth=0, kind=tether.FailureKind.TIMEOUT
                        )
                    ]
                )
            ),
            tether.TetherError.InvalidConfig,
            "nth must be at least 1",
        ),
    ]
    for builder, error, words in cases:
        with pytest.raises(error, match=words):
            builder.build()


@asynctest
async def test_policy_overrides_apply():
    # Longer grace, shorter long background than policy v1 (400 ms, 30 s).
    policy = tether.Policy(offline_grace_ms=800, long_background_ms=1_000)
    async with simulated_node(policy=policy) as node:
        handle = node.handle()
        await handle.network_path_changed(snapshot(1))
        offline = await handle.network_path_changed(snapshot(2, tether.Availability.UNAVAILABLE))
        assert offline.action == tether.ActionKind.DISCONNECT
        assert offline.duration_ms >= 800
        await handle.network_path_changed(snapshot(3))
        await handle.app_lifecycle_changed(BACKGROUND)
        long = await handle.app_lifecycle_changed(foreground(1_000))
        assert long.action == tether.ActionKind.RECONNECT


@asynctest
async def test_a_node_dropped_without_shutdown_stops_in_the_background():
    node = tether.TetherNodeBuilder().simulated(tether.SimulatedEffects(duration_ms=5)).build()
    handle = node.handle()
    assert (await handle.network_path_changed(snapshot(1))).success
    del node
    gc.collect()
    await wait_until(handle.is_shut_down, "the dropped node to stop")
    with pytest.raises(tether.TetherError.ShutDown):
        await handle.force_reconnect(tether.ReconnectReason.MANUAL_RECONNECT)
