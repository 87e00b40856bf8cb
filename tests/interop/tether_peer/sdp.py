"""tether's SDP attributes (NEGOTIATION.md §4) and the few SDP facts the peer
reads (the `o=` line, ICE credentials, DTLS fingerprints, candidates).

Written from docs/NEGOTIATION.md only.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Optional

U64_MAX = 18_446_744_073_709_551_615
TAG_PREFIX = "a=x-tether-"
REJECT_REASONS = ("unknown-session", "failed")


def parse_u64(text: str) -> Optional[int]:
    """A decimal u64: ASCII digits only, no sign (§4.1). None when malformed."""
    text = text.strip()
    if not text or not all("0" <= c <= "9" for c in text):
        return None
    value = int(text)
    return value if value <= U64_MAX else None


@dataclass(frozen=True)
class Origin:
    """The `o=` line's session id (an exact string) and version (u64)."""

    session_id: str
    version: int


def parse_origin(sdp: str) -> Optional[Origin]:
    for line in sdp.splitlines():
        if line.startswith("o="):
            fields = line[2:].split()
            if len(fields) < 3:
                return None
            version = parse_u64(fields[2])
            if version is None:
                return None
            return Origin(fields[1], version)
    return None


def set_origin(sdp: str, origin: Origin) -> str:
    """Rewrites the `o=` line's session id and version, keeping its other fields."""
    out = []
    done = False
    for line in sdp.splitlines(keepends=True):
        if not done and line.startswith("o="):
            body = line.rstrip("\r\n")
            ending = line[len(body):]
            fields = body[2:].split(" ")
            fields[1] = origin.session_id
            fields[2] = str(origin.version)
            line = "o=" + " ".join(fields) + ending
            done = True
        out.append(line)
    return "".join(out)


def new_session_id() -> str:
    """A new random session id for a new pc (§1, §15 item 5), as RFC 3264 asks:
    a decimal number below 2^63."""
    return str(secrets.randbelow(2**62) + 1)


def add_attribute(sdp: str, line: str) -> str:
    """Inserts `line` + CRLF right before the first `m=` line, or appends it
    when there is none (§4.1)."""
    attribute = line + "\r\n"
    lines = sdp.splitlines(keepends=True)
    for i, existing in enumerate(lines):
        if existing.startswith("m="):
            lines.insert(i, attribute)
            return "".join(lines)
    if sdp and not sdp.endswith("\n"):
        sdp += "\r\n"
    return sdp + attribute


@dataclass
class Tags:
    """What the `a=x-tether-` lines of one SDP said."""

    seq: Optional[int] = None
    ice_restart: bool = False
    answers: Optional[tuple[str, int, Optional[int]]] = None  # session id, version, seq
    rejected: Optional[str] = None
    unknown: list[str] = field(default_factory=list)


def _split_keep_lf(text: str) -> list[str]:
    """Lines split after every "\\n" (str.splitlines also splits at lone "\\r"
    and other separators, which §4.1 does not)."""
    parts = re.split(r"(?<=\n)", text)
    return [p for p in parts if p]


def untag(sdp: str) -> tuple[Tags, str]:
    """Removes every line starting with `a=x-tether-` (anywhere) and interprets
    those of §4; every other byte is kept exactly (§4.1). Unknown ones are
    ignored."""
    tags = Tags()
    kept = []
    for line in _split_keep_lf(sdp):
        if not line.startswith(TAG_PREFIX):
            kept.append(line)
            continue
        body = line.rstrip("\r\n")
        name, colon, value = body[len("a="):].partition(":")
        if name == "x-tether-seq" and colon:
            tags.seq = parse_u64(value)
        elif name == "x-tether-ice-restart" and not colon:
            if body.rstrip() == "a=x-tether-ice-restart":
                tags.ice_restart = True
        elif name == "x-tether-offer" and colon:
            fields = value.split()
            if len(fields) >= 2:
                version = parse_u64(fields[1])
                if version is not None:
                    seq = parse_u64(fields[2]) if len(fields) >= 3 else None
                    tags.answers = (fields[0], version, seq)
        elif name == "x-tether-reject" and colon:
            reason = value.strip()
            tags.rejected = reason if reason in REJECT_REASONS else "failed"
        else:
            tags.unknown.append(body)
    return tags, "".join(kept)


def tag_offer(sdp: str, seq: int, ice_restart: bool) -> str:
    sdp = add_attribute(sdp, f"a=x-tether-seq:{seq}")
    if ice_restart:
        sdp = add_attribute(sdp, "a=x-tether-ice-restart")
    return sdp


def answer_attribute(origin: Origin, seq: Optional[int]) -> str:
    """`a=x-tether-offer:<session-id> <version>`, with the offer's seq as a third
    field when it had one (planned rule P1; today's parsers ignore it)."""
    value = f"{origin.session_id} {origin.version}"
    if seq is not None:
        value += f" {seq}"
    return f"a=x-tether-offer:{value}"


def tag_answer(sdp: str, offer: Origin, offer_seq: Optional[int]) -> str:
    return add_attribute(sdp, answer_attribute(offer, offer_seq))


def rejection(offer: Origin, offer_seq: Optional[int], reason: str) -> str:
    """The whole `sdp` of a rejection (§10): exactly two lines."""
    return f"{answer_attribute(offer, offer_seq)}\r\na=x-tether-reject:{reason}\r\n"


def fingerprints(sdp: str) -> frozenset[tuple[str, str]]:
    """Every `a=fingerprint` (session and media level), as (algorithm, hex) in
    lower case (§9.3)."""
    found = set()
    for line in sdp.splitlines():
        if line.startswith("a=fingerprint:"):
            parts = line[len("a=fingerprint:"):].split()
            if len(parts) >= 2:
                found.add((parts[0].lower(), parts[1].lower()))
    return frozenset(found)


def fingerprints_differ(previous: str, new: str) -> bool:
    """Whether `new` names another DTLS identity than `previous`: they share no
    (algorithm, value) pair for an algorithm both list."""
    old, now = fingerprints(previous), fingerprints(new)
    common = {a for a, _ in old} & {a for a, _ in now}
    if not common:
        return old != now
    return any(
        {v for a, v in old if a == alg} != {v for a, v in now if a == alg} for alg in common
    )


def ice_credentials(sdp: str) -> Optional[tuple[str, str]]:
    """The first `a=ice-ufrag` / `a=ice-pwd` pair (tether has one media section)."""
    ufrag = pwd = None
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:") and ufrag is None:
            ufrag = line[len("a=ice-ufrag:"):].strip()
        elif line.startswith("a=ice-pwd:") and pwd is None:
            pwd = line[len("a=ice-pwd:"):].strip()
    if ufrag is None or pwd is None:
        return None
    return ufrag, pwd


def split_candidates(sdp: str) -> tuple[str, list[str]]:
    """Takes the `a=candidate` and `a=end-of-candidates` lines out of an SDP our
    stack made, so that the candidates are trickled (§12) instead."""
    kept, candidates = [], []
    for line in _split_keep_lf(sdp):
        body = line.rstrip("\r\n")
        if body.startswith("a=candidate:"):
            candidates.append(body[len("a="):])
        elif body == "a=end-of-candidates":
            continue
        else:
            kept.append(line)
    return "".join(kept), candidates

