"""tether for Python: connection recovery for real-time apps.

A thin package around the UniFFI bindings of the ``tether-ffi`` crate,
built by ``pip install ./crates/ffi`` (maturin): the generated module and
the native library are the subpackage ``tether.tether_ffi``; everything
they export is re-exported here, with type hints (``py.typed``)::

    import asyncio, tether

    async def main():
        node = (tether.TetherNodeBuilder()
                .name("demo")
                .simulated(tether.SimulatedEffects(duration_ms=50))
                .build())
        handle = node.handle()
        result = await handle.network_path_changed(tether.NetworkSnapshot(
            sequence=1,
            availability=tether.Availability.AVAILABLE,
            transports=[tether.Transport.WIFI]))
        print(result.action, result.success)
        await node.shutdown()

    asyncio.run(main())

Live nodes exchange messages (``await node.send("bob", b"hi")``,
``message = await node.receive()``); in a library built with the
``test-server`` feature (``crates/ffi/test.sh`` installs one),
``await tether.start_test_signaling_server()`` gives an
embedded signaling server on loopback whose ``node_builder(peer)`` builds
them for tests and demos.

Async methods run on tether's own runtime; any asyncio event loop can await
them. State listeners are called on tether's threads, never on the event
loop's: hand results over with ``loop.call_soon_threadsafe``.
"""

try:
    from .tether_ffi.tether_ffi import *  # noqa: F401,F403
    from .tether_ffi.tether_ffi import __all__ as _generated
except ImportError as err:  # pragma: no cover - only in a source tree, not installed
    raise ImportError(
        "tether's generated bindings are missing: install the package "
        f"(pip install ./crates/ffi, or crates/ffi/test.sh) ({err})"
    ) from err

__all__ = list(_generated)
