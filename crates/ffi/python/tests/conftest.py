"""Shared helpers for the tether Python tests.

Every test drives a simulated node (the real decision engine and node
runtime, with scripted actions) through the generated bindings, exactly as
an app would, on its own asyncio event loop.
"""

import asyncio
import contextlib
import functools
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

import tether  # noqa: E402

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


async def wait_for_state(node, state, timeout=5.0):
    """Polls `node.state()` until it is `state`."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        current = node.state()
        if not seen or seen[-1] != current:
            seen.append(current)
        if current == state:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"node went through {[str(s) for s in seen]}, never {state}")
        await asyncio.sleep(0.01)


class StateRecorder(tether.StateListener):
    """A state listener that records every state and the thread it came on."""

    def __init__(self):
        self._cond = threading.Condition()
        self.states = []
        self.threads = set()

    def on_state_changed(self, state):
        with self._cond:
            self.states.append(state)
            self.threads.add(threading.get_ident())
            self._cond.notify_all()

    def snapshot(self):
        with self._cond:
            return list(self.states)

    async def wait_for(self, predicate, timeout=5.0):
        """Waits (without blocking the event loop) until `predicate(states)`."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.snapshot()
            if predicate(states):
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"state listener saw only {[str(s) for s in states]}")
            await asyncio.sleep(0.01)
