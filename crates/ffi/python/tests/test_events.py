"""Every event kind through the handle, with the result checked."""

import asyncio
import contextlib

import tether
from conftest import (
    ACTION_NEVER_ENDS_MS,
    BACKGROUND,
    CONNECTED,
    OFFLINE,
    StateRecorder,
    asynctest,
    foreground,
    recovering,
    simulated_node,
    snapshot,
    wait_for_state,
)

A = tether.ActionKind


def assert_action(result, action):
    assert result.action == action, str(result)
    assert result.success, str(result)
    assert result.error is None and result.error_message is None
    assert result.no_action is None
    assert result.duration_ms >= 0


def assert_no_action(result, why):
    assert result.action is None, str(result)
    assert result.success, str(result)
    assert result.no_action == why
    # Answered at once: an answer that never came would have raised
    # TetherError.ResultTimeout instead of returning.


@asynctest
async def test_network_path_changed():
    async with simulated_node() as node:
        handle = node.handle()
        first = snapshot(1, transports=[tether.Transport.WIFI])
        result = await handle.network_path_changed(first)
        assert_action(result, A.RESTORE)
        assert result.event == tether.NetworkEvent.NETWORK_PATH_CHANGED(snapshot=first)
        assert result.duration_ms >= 20  # the scripted action's time
        assert node.state() == tether.ConnectionState.CONNECTED()

        assert_no_action(await handle.network_path_changed(first), tether.NoAction.STALE)
        assert_no_action(await handle.network_path_changed(snapshot(2)), tether.NoAction.DUPLICATE)
        metered = snapshot(3, is_expensive=True, is_constrained=True)
        assert_no_action(await handle.network_path_changed(metered), tether.NoAction.STATE_ONLY)

        # A handoff to cellular is a route change; so is a new path id on Wi-Fi.
        cellular = snapshot(4, transports=[tether.Transport.CELLULAR], is_expensive=True)
        assert_action(await handle.network_path_changed(cellular), A.RESTORE)
        roam_a = snapshot(5, transports=[tether.Transport.WIFI], path_id=-41)
        assert_action(await handle.network_path_changed(roam_a), A.RESTORE)
        roam_b = snapshot(6, transports=[tether.Transport.WIFI], path_id=42)
        assert_action(await handle.network_path_changed(roam_b), A.RESTORE)

        # Unknown (captive portal) probes; Unavailable commits offline after the grace.
        unknown = snapshot(7, tether.Availability.UNKNOWN)
        assert_action(await handle.network_path_changed(unknown), A.PROBE)
        offline = await handle.network_path_changed(snapshot(8, tether.Availability.UNAVAILABLE))
        assert_action(offline, A.DISCONNECT)
        assert offline.duration_ms >= 400  # policy v1's offline grace
        assert node.state() == tether.ConnectionState.OFFLINE()
        assert_action(await handle.network_path_changed(snapshot(9)), A.RESTORE)


@asynctest
async def test_app_lifecycle_changed():
    async with simulated_node() as node:
        handle = node.handle()
        await handle.network_path_changed(snapshot(1))
        assert_no_action(await handle.app_lifecycle_changed(BACKGROUND), tether.NoAction.STATE_ONLY)
        assert_no_action(await handle.app_lifecycle_changed(BACKGROUND), tether.NoAction.DUPLICATE)
        short = await handle.app_lifecycle_changed(foreground(1_500))
        assert_action(short, A.PROBE)
        assert short.event == tether.NetworkEvent.APP_LIFECYCLE_CHANGED(state=foreground(1_500))
        await handle.app_lifecycle_changed(BACKGROUND)
        assert_action(await handle.app_lifecycle_changed(foreground(30_000)), A.RECONNECT)


@asynctest
async def test_cleanup_connections():
    async with simulated_node() as node:
        handle = node.handle()
        await handle.network_path_changed(snapshot(1))
        result = await handle.cleanup_connections(tether.CleanupReason.MANUAL_RESET)
        assert_action(result, A.CLEANUP)
        assert node.state() == tether.ConnectionState.CLOSED()
        # Not parked: the path recovers again.
        assert_action(
            await handle.network_path_changed(snapshot(2, transports=[tether.Transport.CELLULAR])),
            A.RESTORE,
        )

        assert_action(await handle.cleanup_connections(tether.CleanupReason.USER_LOGOUT), A.CLEANUP)
        parked = tether.ConnectionState.PARKED(reason=tether.ParkReason.USER_LOGOUT)
        assert node.state() == parked
        blocked = await handle.network_path_changed(snapshot(3, transports=[tether.Transport.WIFI]))
        assert blocked.action is None and not blocked.success
        assert blocked.no_action == tether.NoAction.PARKED
        assert blocked.error == tether.EventError.PARKED(reason=tether.ParkReason.USER_LOGOUT)
        assert blocked.error_message == "recovery is parked (user_logout)"


@asynctest
async def test_force_reconnect():
    async with simulated_node() as node:
        handle = node.handle()
        await handle.network_path_changed(snapshot(1))
        result = await handle.force_reconnect(tether.ReconnectReason.STALE_CONNECTION_SUSPECTED)
        assert_action(result, A.RECONNECT)
        assert result.event == tether.NetworkEvent.FORCE_RECONNECT(
            reason=tether.ReconnectReason.STALE_CONNECTION_SUSPECTED
        )
        # Only a manual reconnect lifts a logout's park.
        await handle.cleanup_connections(tether.CleanupReason.USER_LOGOUT)
        refused = await handle.force_reconnect(tether.ReconnectReason.NETWORK_PATH_CHANGED)
        assert refused.no_action == tether.NoAction.PARKED and not refused.success
        assert_action(await handle.force_reconnect(tether.ReconnectReason.MANUAL_RECONNECT), A.RECONNECT)
        assert node.state() == tether.ConnectionState.CONNECTED()


@asynctest
async def test_submit_returns_on_acceptance():
    # Every scripted action outlasts the test: a submit that waited for its
    # event's result would hang until the test's bound, and fail.
    async with simulated_node(duration_ms=ACTION_NEVER_ENDS_MS, shutdown_timeout_ms=100) as node:
        handle = node.handle()
        event = tether.NetworkEvent.NETWORK_PATH_CHANGED(snapshot=snapshot(1))
        assert await handle.submit(event) is None
        # Accepted, not finished: the restore it led to is running.
        await wait_for_state(node, recovering(A.RESTORE))
        for event in [
            tether.NetworkEvent.APP_LIFECYCLE_CHANGED(state=BACKGROUND),
            tether.NetworkEvent.APP_LIFECYCLE_CHANGED(state=foreground(10)),
            tether.NetworkEvent.CLEANUP_CONNECTIONS(reason=tether.CleanupReason.STALE_CONNECTION_SUSPECTED),
            tether.NetworkEvent.FORCE_RECONNECT(reason=tether.ReconnectReason.PROBE_FAILED),
        ]:
            assert await handle.submit(event) is None
        # Acted on: the cleanup cancelled the restore and runs (the forced
        # reconnect waits for it).
        await wait_for_state(node, tether.ConnectionState.CLOSED())


# How long the scripted actions of the coalescing tests take. The later events
# are sent the moment the first action is seen running, and reach the node in
# microseconds; this only has to outlast that. Nothing asserts a duration: if
# an event ever arrived after the action ended, the `coalesced` flags and the
# listener's states (a second action) say so.
RUNNING_ACTION_MS = 2_000


@contextlib.asynccontextmanager
async def reconnect_running():
    """A fresh node with a state recorder, on which a forced reconnect is
    running (the listener has reported it): yields (node, recorder, the
    pending call)."""
    async with simulated_node(
        duration_ms=RUNNING_ACTION_MS, result_timeout_ms=20_000, shutdown_timeout_ms=100
    ) as node:
        recorder = StateRecorder()
        node.subscribe_state(recorder)
        await recorder.wait_for(lambda s: s == [OFFLINE])
        first = asyncio.ensure_future(node.handle().force_reconnect(tether.ReconnectReason.PROBE_FAILED))
        await recorder.wait_for(lambda s: s == [OFFLINE, recovering(A.RECONNECT)])
        assert not first.done(), "the reconnect was answered before it could have run"
        yield node, recorder, first


@asynctest
async def test_concurrent_events_coalesce_into_one_action():
    async with reconnect_running() as (node, recorder, first):
        handle = node.handle()

        # While the reconnect runs: two more forced reconnects, and a return
        # from the background (a probe, weaker), which the running reconnect covers.
        later_events = [
            tether.NetworkEvent.FORCE_RECONNECT(reason=tether.ReconnectReason.STALE_CONNECTION_SUSPECTED),
            tether.NetworkEvent.FORCE_RECONNECT(reason=tether.ReconnectReason.MANUAL_RECONNECT),
        ]
        later = [asyncio.ensure_future(handle.force_reconnect(e.reason)) for e in later_events]
        # Going to the background changes the phase only: answered at once.
        assert_no_action(await handle.app_lifecycle_changed(BACKGROUND), tether.NoAction.STATE_ONLY)
        back = tether.NetworkEvent.APP_LIFECYCLE_CHANGED(state=foreground(1_500))
        later_events.append(back)
        later.append(asyncio.ensure_future(handle.app_lifecycle_changed(back.state)))

        started = await first
        assert_action(started, A.RECONNECT)
        assert not started.coalesced, str(started)
        for event, result in zip(later_events, await asyncio.gather(*later)):
            assert result.event == event, str(result)
            # Answered by the reconnect that was already running, as its
            # co-waiter: same action, same outcome.
            assert result.coalesced, f"{event} was not coalesced: {result}"
            assert_action(result, A.RECONNECT)

        # One action ran for all four callers: one reconnect, then connected.
        states = await recorder.wait_for(lambda s: s[-1:] == [CONNECTED])
        assert states == [OFFLINE, recovering(A.RECONNECT), CONNECTED], [str(s) for s in states]
        assert node.state() == CONNECTED


@asynctest
async def test_a_route_change_during_a_reconnect_is_not_coalesced_but_followed_up():
    # The reconnect began before the new route existed: the route change gets
    # its own restore right after, instead of sharing the reconnect.
    async with reconnect_running() as (node, recorder, first):
        handle = node.handle()

        route = snapshot(1, transports=[tether.Transport.CELLULAR])
        restore = await handle.network_path_changed(route)
        assert_action(await first, A.RECONNECT)
        assert_action(restore, A.RESTORE)
        assert not restore.coalesced, str(restore)
        states = await recorder.wait_for(lambda s: s[-1:] == [CONNECTED])
        # The restore followed the reconnect directly: it was queued while
        # the reconnect ran.
        assert states == [
            OFFLINE,
            recovering(A.RECONNECT),
            recovering(A.RESTORE),
            CONNECTED,
        ], [str(s) for s in states]


@asynctest
async def test_failed_action_reports_its_error():
    failures = [tether.SimulatedFailure(action=A.RESTORE, nth=1, kind=tether.FailureKind.UNREACHABLE)]
    async with simulated_node(failures=failures) as node:
        handle = node.handle()
        result = await handle.network_path_changed(snapshot(1))
        assert result.action == A.RESTORE
        assert not result.success
        assert result.error == tether.EventError.ACTION_FAILED(
            action=A.RESTORE,
            kind=tether.FailureKind.UNREACHABLE,
            message="scripted failure of restore #1",
        )
        assert result.error_message == "restore failed (unreachable): scripted failure of restore #1"
        # The node retries on its own (after its backoff) and gets there.
        await wait_for_state(node, tether.ConnectionState.CONNECTED())
