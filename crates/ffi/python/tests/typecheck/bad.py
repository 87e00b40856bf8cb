"""Misuse mypy must reject (test_typing.py): each line marked `# error`."""

import tether


async def main() -> None:
    builder = tether.TetherNodeBuilder().name(42)  # error
    tether.TetherNodeBuilder().fallback_signaling_urls("ws://b.example/ws")  # error
    tether.NetworkSnapshot(sequence="1", availability=tether.Availability.AVAILABLE)  # error
    node = builder.build()
    await node.handle().cleanup_connections("user_logout")  # error
    message: str = await node.receive()  # error
