"""ICE restart in place on aiortc (NEGOTIATION.md §8).

aiortc 1.16 has no ICE restart: `createOffer()` takes no `iceRestart`
option, and a pc keeps the ICE credentials it was built with. §8 needs new
`a=ice-ufrag`/`a=ice-pwd` on the *same* pc (same DTLS association, same data
channel), so this module does to the pc's aioice agent what an ICE restart
does: new local credentials, the remote's new credentials, and a fresh round
of connectivity checks on every pair. Data keeps flowing on the selected
pair until a check under the new credentials nominates one. It reaches into
aiortc/aioice internals, pinned by requirements.txt.
"""

from __future__ import annotations

import secrets
import string
from typing import Any, Optional

from aiortc import RTCPeerConnection

_ICE_CHARS = string.ascii_letters + string.digits + "+/"


def _random(n: int) -> str:
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(n))


def agent(pc: RTCPeerConnection) -> Optional[Any]:
    """The aioice Connection under the pc's (single, bundled) SCTP transport."""
    sctp = pc.sctp
    if sctp is None:
        return None
    return sctp.transport.transport._connection


def new_local_credentials(pc: RTCPeerConnection) -> None:
    conn = agent(pc)
    if conn is None:
        return
    conn._local_username = _random(8)
    conn._local_password = _random(24)


def local_credentials(pc: RTCPeerConnection) -> Optional[tuple[str, str]]:
    conn = agent(pc)
    if conn is None:
        return None
    return conn.local_username, conn.local_password


def started(pc: RTCPeerConnection) -> bool:
    """Whether the agent's first round of checks ran (connect() was called)."""
    conn = agent(pc)
    return conn is not None and conn._early_checks_done


def set_remote_credentials(pc: RTCPeerConnection, ufrag: str, pwd: str) -> None:
    """Adopts the remote's (new) credentials: checks it sends are accepted,
    and ours are signed for it."""
    conn = agent(pc)
    if conn is None:
        return
    conn.remote_username = ufrag
    conn.remote_password = pwd


def recheck(pc: RTCPeerConnection) -> None:
    """A fresh round of checks on every pair, under the current credentials.
    The selected pair keeps carrying data until a check nominates one."""
    conn = agent(pc)
    if conn is None or not conn._early_checks_done or conn.remote_password is None:
        return  # the first connect() is still to run, with these credentials
    from aioice.ice import CandidatePair

    conn._nominating.clear()
    for pair in list(conn._check_list):
        if pair.task is not None:
            pair.task.cancel()
            pair.task = None
        pair.nominated = False
        pair.remote_nominated = False
        pair.state = CandidatePair.State.WAITING
    for pair in list(conn._check_list):
        conn.check_start_task(pair)


def kick_new_pairs(pc: RTCPeerConnection) -> None:
    """Checks pairs formed by candidates added after the first round ended
    (aioice only paces checks during its first connect())."""
    conn = agent(pc)
    if conn is None or not conn._check_list_done or conn.remote_password is None:
        return
    from aioice.ice import CandidatePair

    for pair in list(conn._check_list):
        if pair.state in (CandidatePair.State.FROZEN, CandidatePair.State.WAITING) and pair.task is None:
            pair.state = CandidatePair.State.WAITING
            conn.check_start_task(pair)


def succeeded_since_restart(pc: RTCPeerConnection) -> bool:
    """Whether a pair passed a check since the last restart_checks()."""
    conn = agent(pc)
    if conn is None:
        return False
    from aioice.ice import CandidatePair

    return any(p.state == CandidatePair.State.SUCCEEDED for p in conn._check_list)


def silence(pc: RTCPeerConnection) -> None:
    """Stops the pc's ICE agent from sending anything more, without any
    goodbye (tests: a pc that vanished with its app)."""
    conn = agent(pc)
    if conn is None:
        return
    conn._closing = True
    if conn._query_consent_task is not None:
        conn._query_consent_task.cancel()
    for pair in conn._check_list:
        if pair.task is not None:
            pair.task.cancel()
    for protocol in conn._protocols:
        if protocol.transport is not None:
            protocol.transport.close()
