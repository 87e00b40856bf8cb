"""An executable specification of the platform adapters' decision logic.

What this file is: `PlatformAdapter` below is a Python mirror, written by
hand, of the decisions that crates/ffi/platform/'s Swift
(`TetherPlatformAdapter.swift`, NWPathMonitor) and Kotlin
(`TetherPlatformAdapter.kt`, ConnectivityManager.NetworkCallback) adapters
make, and the tests run that mirror against a real (simulated) node through
the generated bindings:

- a snapshot only on a material change of the path, numbered with an
  increasing sequence;
- a repeated background not sent again, and the background time measured
  on a monotonic clock (here an injected one);
- every event delivered in order by one consumer through `handle.submit`,
  each awaited before the next; `TetherError.ShutDown` ends the consumer.

What it is not: a test of the Swift or Kotlin code. The Kotlin adapter's
decisions are compiled and tested for real on the JVM
(platform/kotlin/core/, crates/ffi/kotlin/test.sh); the Swift ones are not
compiled here (no Swift toolchain). This mirror stays as the
language-neutral statement of the rules; a change to an adapter's
decisions must be made here too.
"""

import asyncio

import tether
from conftest import CONNECTED, StateRecorder, asynctest, simulated_node

A = tether.ActionKind


class PlatformAdapter:
    """The Python mirror of the Swift/Kotlin `TetherPlatformAdapter`'s
    decisions (see the module docstring); the platform callbacks become
    plain methods, named after the callbacks they stand for."""

    def __init__(self, handle, clock):
        self._handle = handle
        self._clock = clock  # monotonic milliseconds, counting while asleep
        self._sequence = 0
        self._last_path = None
        self._background_since = None
        self._events = asyncio.Queue()
        self.delivered = []
        self.failures = []
        self._consumer = asyncio.ensure_future(self._deliver())

    # NWPathMonitor.pathUpdateHandler / NetworkCallback.onCapabilitiesChanged
    def path_changed(self, availability, transports, expensive=False, constrained=False, path_id=0):
        path = (availability, frozenset(transports), expensive, constrained, path_id)
        if path == self._last_path:
            return  # not a material change: the platform repeats itself
        self._last_path = path
        self._sequence += 1
        snapshot = tether.NetworkSnapshot(
            sequence=self._sequence,
            availability=availability,
            transports=sorted(transports, key=lambda t: t.value),
            is_expensive=expensive,
            is_constrained=constrained,
            path_id=path_id,
        )
        self._events.put_nowait(tether.NetworkEvent.NETWORK_PATH_CHANGED(snapshot=snapshot))

    # didEnterBackground / ProcessLifecycleOwner onStop
    def entered_background(self):
        if self._background_since is not None:
            return
        self._background_since = self._clock()
        self._events.put_nowait(
            tether.NetworkEvent.APP_LIFECYCLE_CHANGED(state=tether.AppLifecycleState.BACKGROUND())
        )

    # willEnterForeground / ProcessLifecycleOwner onStart
    def entered_foreground(self):
        since, self._background_since = self._background_since, None
        duration = 0 if since is None else max(0, self._clock() - since)
        state = tether.AppLifecycleState.FOREGROUND(background_duration_ms=duration)
        self._events.put_nowait(tether.NetworkEvent.APP_LIFECYCLE_CHANGED(state=state))

    async def _deliver(self):
        # One consumer, one submit at a time: the node sees the platform's order.
        while True:
            event = await self._events.get()
            try:
                await self._handle.submit(event)
                self.delivered.append(event)
            except tether.TetherError.ShutDown as err:
                self.failures.append(err)
                return  # the node is gone; nothing more to deliver
            except tether.TetherError as err:
                self.failures.append(err)  # logged by the adapters; the next event goes on
            finally:
                self._events.task_done()

    async def drained(self):
        """Until every event reported so far was delivered, or the consumer
        ended (the node shut down)."""
        joined = asyncio.ensure_future(self._events.join())
        try:
            await asyncio.wait([joined, self._consumer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()

    @property
    def consumer_ended(self):
        return self._consumer.done()

    def close(self):
        self._consumer.cancel()


@asynctest
async def test_adapter_spec_numbers_material_changes_and_delivers_in_order():
    now_ms = [1_000_000]
    async with simulated_node(duration_ms=400) as node:
        recorder = StateRecorder()
        node.subscribe_state(recorder)
        adapter = PlatformAdapter(node.handle(), clock=lambda: now_ms[0])
        wifi = [tether.Transport.WIFI]
        adapter.path_changed(tether.Availability.AVAILABLE, wifi, path_id=7)
        adapter.path_changed(tether.Availability.AVAILABLE, wifi, path_id=7)  # repeated
        adapter.path_changed(tether.Availability.AVAILABLE, [tether.Transport.CELLULAR], expensive=True)
        await adapter.drained()
        sequences = [e.snapshot.sequence for e in adapter.delivered]
        assert sequences == [1, 2]
        await recorder.wait_for(lambda s: s[-1:] == [CONNECTED])

        adapter.entered_background()
        adapter.entered_background()  # repeated
        now_ms[0] += 45_000  # 45 s in the background, the device asleep
        adapter.entered_foreground()
        await adapter.drained()
        lifecycle = [e.state for e in adapter.delivered[2:]]
        assert lifecycle == [
            tether.AppLifecycleState.BACKGROUND(),
            tether.AppLifecycleState.FOREGROUND(background_duration_ms=45_000),
        ]
        # A long background reconnects.
        reconnecting = tether.ConnectionState.RECOVERING(action=A.RECONNECT, attempt=1)
        await recorder.wait_for(lambda s: s[-2:] == [reconnecting, CONNECTED])
        assert adapter.failures == []
        adapter.close()


@asynctest
async def test_adapter_spec_stops_delivering_to_a_shut_down_node():
    async with simulated_node() as node:
        adapter = PlatformAdapter(node.handle(), clock=lambda: 0)
        await node.shutdown()
        adapter.path_changed(tether.Availability.UNAVAILABLE, [])
        await adapter.drained()
        assert adapter.consumer_ended
        assert adapter.delivered == []
        assert [type(e) for e in adapter.failures] == [tether.TetherError.ShutDown]
        # Events after that are not sent anywhere, and nothing raises.
        adapter.path_changed(tether.Availability.AVAILABLE, [tether.Transport.WIFI])
        assert adapter.delivered == [] and len(adapter.failures) == 1
        adapter.close()
