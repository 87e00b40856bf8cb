"""Shared helpers for the tether Python tests.

Every test drives a simulated node (the real decision engine and node
runtime, with scripted actions) through the generated bindings, exactly as
an app would, on its own asyncio event loop.
"""

import asyncio
import contextlib
import functools
import threading
import time

import tether  # the installed package (crates/ffi/test.sh), not the source tree

# Bound on any single test's async body: a hang fails, it never blocks CI.
TEST_TIMEOUT_S = 30


def asynctest(fn):
    """Runs an `async def` test on a fresh event loop, bounded in time."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT_S))

    return wrapper


@contextlib.asynccontextmanager
async def simulated_node(duration_ms=20, failures=(), **settings):
    """A simulated node, shut down on exit (unless the test did it)."""
    builder = tether.TetherNodeBuilder().name("pytest").simulated(
        tether.SimulatedEffects(duration_ms=duration_ms, failures=list(failures))
    )
    for setting, value in settings.items():
        builder = getattr(builder, setting)(value)
    node = builder.build()
    try:
        yield node
    finally:
        if not node.is_shut_down():
            await node.shutdown()


def snapshot(sequence, availability=tether.Availability.AVAILABLE, transports=None, **fields):
    if transports is None:
        transports = [tether.Transport.WIFI] if availability != tether.Availability.UNAVAILABLE else []
    return tether.NetworkSnapshot(
        sequence=sequence, availability=availability, transports=transports, **fields
    )


def foreground(background_duration_ms):
    return tether.AppLifecycleState.FOREGROUND(background_duration_ms=background_duration_ms)


BACKGROUND = tether.AppLifecycleState.BACKGROUND()
CONNECTED = tether.ConnectionState.CONNECTED()
OFFLINE = tether.ConnectionState.OFFLINE()  # a fresh node's state: nothing asked for a connection

# A scripted action duration no test outlives (each is bounded by
# TEST_TIMEOUT_S): such an action ends only when something cancels it, so a
# test can act while it runs without racing its end.
ACTION_NEVER_ENDS_MS = 3_600_000


def recovering(action, attempt=1):
    return tether.ConnectionState.RECOVERING(action=action, attempt=attempt)


async def wait_until(condition, what, timeout=5.0, interval=0.01):
    """Bounded polling, for what nothing notifies: `condition()` must come
    true within `timeout` seconds, or the test fails saying `what` it waited
    for."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}, in vain")
        await asyncio.sleep(interval)


async def wait_for_state(node, state, timeout=5.0):
    """Polls `node.state()` (bounded) until it is `state`."""
    seen = []

    def reached():
        current = node.state()
        if not seen or seen[-1] != current:
            seen.append(current)
        return current == state

    try:
        await wait_until(reached, f"state {state}", timeout)
    except AssertionError:
        raise AssertionError(
            f"node went through {[str(s) for s in seen]}, never {state} (within {timeout} s)"
        ) from None


class StateRecorder(tether.StateListener):
    """A state listener that records every state and the thread it came on,
    and wakes the tests waiting on it (`wait_for`) at every call.

    With `raise_error`, every call raises it after recording, as a broken UI
    would.
    """

    def __init__(self, raise_error=None):
        self._lock = threading.Lock()
        self._wakers = set()
        self._raise_error = raise_error
        self.states = []
        self.threads = set()

    def on_state_changed(self, state):
        # On a tether-rt thread: record, then wake each waiting event loop.
        with self._lock:
            self.states.append(state)
            self.threads.add(threading.get_ident())
            wakers = list(self._wakers)
        for loop, woken in wakers:
            try:
                loop.call_soon_threadsafe(woken.set)
            except RuntimeError:
                pass  # that waiter's event loop has closed
        if self._raise_error is not None:
            raise self._raise_error

    def snapshot(self):
        with self._lock:
            return list(self.states)

    async def wait_for(self, predicate, timeout=5.0):
        """Waits (without blocking the event loop) until `predicate(states)`
        holds, re-checking at every listener call; fails after `timeout`
        seconds with the states seen."""
        loop = asyncio.get_running_loop()
        waker = (loop, asyncio.Event())
        woken = waker[1]
        with self._lock:
            self._wakers.add(waker)
        try:
            deadline = loop.time() + timeout
            while True:
                woken.clear()  # before the check: a call after it sets it again
                states = self.snapshot()
                if predicate(states):
                    return states
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise AssertionError(
                        f"state listener saw only {[str(s) for s in states]} in {timeout} s"
                    )
                try:
                    await asyncio.wait_for(woken.wait(), remaining)
                except asyncio.TimeoutError:
                    pass  # one last check above, then the failure
        finally:
            with self._lock:
                self._wakers.discard(waker)
