"""Typed use of the public API: mypy --strict --allow-untyped-calls must
accept it (test_typing.py).

Two gaps of UniFFI's generated hints show here: constructors of objects
(`TetherNodeBuilder()`) are not annotated (hence --allow-untyped-calls), and
the variants of an enum with data (`NetworkEvent.FORCE_RECONNECT`) are
subclasses of the enum only at run time, so passing one where the enum is
expected needs a `cast`.
"""

from typing import cast

import tether


class Banner(tether.StateListener):
    def __init__(self) -> None:
        self.last: tether.ConnectionState | None = None

    def on_state_changed(self, state: tether.ConnectionState) -> None:
        self.last = state


async def main() -> int:
    node: tether.TetherNode = (
        tether.TetherNodeBuilder()
        .name("typed")
        .policy(tether.Policy(offline_grace_ms=400))
        .simulated(tether.SimulatedEffects(duration_ms=5))
        .build()
    )
    subscription: tether.StateSubscription = node.subscribe_state(Banner())
    snapshot = tether.NetworkSnapshot(
        sequence=1,
        availability=tether.Availability.AVAILABLE,
        transports=[tether.Transport.WIFI],
        path_id=7,
    )
    result: tether.NetworkEventResult = await node.handle().network_path_changed(snapshot)
    action: tether.ActionKind | None = result.action
    reconnect = tether.NetworkEvent.FORCE_RECONNECT(reason=tether.ReconnectReason.MANUAL_RECONNECT)
    await node.handle().submit(cast(tether.NetworkEvent, reconnect))
    subscription.cancel()
    report: tether.ShutdownReport = await node.shutdown()
    return int(report.callers_answered) + (0 if action is None else 1)


def live_builder(ca_pem: str) -> tether.TetherNodeBuilder:
    builder: tether.TetherNodeBuilder = (
        tether.TetherNodeBuilder()
        .signaling_url("wss://signal.example/ws")
        .fallback_signaling_urls(["wss://signal-2.example/ws"])
        .tls_ca_pem(ca_pem)
        .tls_ca_path("/etc/tether/ca")
        .ice_servers([tether.IceServer(urls=["turn:turn.example:3478"], username="u", credential="p")])
        .relay_only(True)
    )
    return builder
