"""A tether peer on aiortc, written from docs/NEGOTIATION.md, docs/PROTOCOL.md
and docs/MESSAGING.md only (no code shared with tether's implementations)."""

from .peer import Negotiator, Quirks, TetherPeer, Timing, role_of
from .signaling import mint_token

__all__ = ["Negotiator", "Quirks", "TetherPeer", "Timing", "mint_token", "role_of"]
