"""The state listener: what a "Reconnecting…" banner follows."""

import threading

import tether
from conftest import (
    CONNECTED,
    OFFLINE,
    StateRecorder,
    asynctest,
    recovering,
    simulated_node,
    snapshot,
    wait_until,
)

A = tether.ActionKind


@asynctest
async def test_force_reconnect_shows_recovering_then_connected():
    async with simulated_node(duration_ms=400) as node:
        handle = node.handle()
        await handle.network_path_changed(snapshot(1))
        recorder = StateRecorder()
        subscription = node.subscribe_state(recorder)
        # The current state comes at once.
        await recorder.wait_for(lambda states: states == [CONNECTED])

        result = await handle.force_reconnect(tether.ReconnectReason.MANUAL_RECONNECT)
        assert result.action == A.RECONNECT and result.success
        states = await recorder.wait_for(lambda states: len(states) >= 3)
        assert states == [CONNECTED, recovering(A.RECONNECT), CONNECTED]
        # Called on tether's threads, never on the event loop's.
        assert threading.get_ident() not in recorder.threads
        assert subscription.is_active()
        subscription.cancel()
        assert not subscription.is_active()


@asynctest
async def test_listener_follows_signaling_loss_and_offline():
    async with simulated_node(duration_ms=400) as node:
        handle = node.handle()
        await handle.network_path_changed(snapshot(1))
        recorder = StateRecorder()
        node.subscribe_state(recorder)
        node.simulate_signaling_loss()
        await recorder.wait_for(lambda s: s[-2:] == [recovering(A.RESTORE), CONNECTED])
        await handle.network_path_changed(snapshot(2, tether.Availability.UNAVAILABLE))
        await recorder.wait_for(lambda s: s[-1:] == [tether.ConnectionState.OFFLINE()])
        states = recorder.snapshot()
        # Never the same state twice in a row.
        assert all(a != b for a, b in zip(states, states[1:])), [str(s) for s in states]


@asynctest
async def test_cancelled_subscription_gets_no_more_updates():
    async with simulated_node(duration_ms=50) as node:
        handle = node.handle()
        # A subscription that stays, to know when the states have come.
        watcher = StateRecorder()
        node.subscribe_state(watcher)
        recorder = StateRecorder()
        subscription = node.subscribe_state(recorder)
        subscription.cancel()
        assert not subscription.is_active()
        # A subscription always delivers the state current when it started,
        # even if cancelled at once; nothing changes until the event below.
        await recorder.wait_for(lambda s: len(s) >= 1)

        await handle.network_path_changed(snapshot(1))
        await watcher.wait_for(lambda s: s[-1:] == [CONNECTED] and len(s) >= 2)
        # The states the watcher followed never reached the cancelled one.
        assert recorder.snapshot() == [OFFLINE], [str(s) for s in recorder.snapshot()]


@asynctest
async def test_a_failing_listener_keeps_its_subscription():
    async with simulated_node(duration_ms=50) as node:
        failing = StateRecorder(raise_error=RuntimeError("the UI is gone"))
        subscription = node.subscribe_state(failing)
        await failing.wait_for(lambda s: s == [OFFLINE])  # raised once already
        await node.handle().network_path_changed(snapshot(1))
        # Every call raised, and the next states still came.
        states = await failing.wait_for(lambda s: s[-1:] == [CONNECTED])
        assert states[0] == OFFLINE and len(states) >= 2, [str(s) for s in states]
        assert subscription.is_active()
        await node.handle().cleanup_connections(tether.CleanupReason.MANUAL_RESET)
        await failing.wait_for(lambda s: s[-1:] == [tether.ConnectionState.CLOSED()])
        assert subscription.is_active()


@asynctest
async def test_subscriptions_end_at_shutdown_after_the_last_state():
    async with simulated_node(duration_ms=20) as node:
        await node.handle().network_path_changed(snapshot(1))
        recorder = StateRecorder()
        subscription = node.subscribe_state(recorder)
        await recorder.wait_for(lambda s: s == [CONNECTED])
        report = await node.shutdown()
        assert report.cleanup_error is None
        assert report.callers_answered == 0
        await recorder.wait_for(lambda s: s[-1:] == [tether.ConnectionState.CLOSED()])
        # Nothing notifies the end of a subscription: poll, bounded.
        await wait_until(lambda: not subscription.is_active(), "the subscription to end after shutdown")
