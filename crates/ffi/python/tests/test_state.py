"""The state listener: what a "Reconnecting…" banner follows."""

import asyncio
import threading

import tether
from conftest import CONNECTED, StateRecorder, asynctest, simulated_node, snapshot

A = tether.ActionKind


def recovering(action, attempt=1):
    return tether.ConnectionState.RECOVERING(action=action, attempt=attempt)


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
        recorder = StateRecorder()
        node.subscribe_state(recorder).cancel()
        await handle.network_path_changed(snapshot(1))
        await asyncio.sleep(0.1)
        # At most the state that was current when it subscribed.
        assert len(recorder.snapshot()) <= 1


@asynctest
async def test_a_failing_listener_keeps_its_subscription():
    class Failing(tether.StateListener):
        def __init__(self):
            self.calls = 0

        def on_state_changed(self, state):
            self.calls += 1
            raise RuntimeError("the UI is gone")

    async with simulated_node(duration_ms=50) as node:
        failing = Failing()
        subscription = node.subscribe_state(failing)
        await node.handle().network_path_changed(snapshot(1))
        await asyncio.sleep(0.1)
        assert failing.calls >= 2
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
        for _ in range(100):
            if not subscription.is_active():
                break
            await asyncio.sleep(0.01)
        assert not subscription.is_active()
