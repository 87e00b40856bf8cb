"""A tether peer on aiortc: the negotiation contract of docs/NEGOTIATION.md
for both roles, over the signaling of docs/PROTOCOL.md, carrying the
reliable messaging of docs/MESSAGING.md. Written from those documents only.

Everything of one pair runs in one task (`Negotiator._run`), so the rules
are applied to one message at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from aiortc import RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from . import ice, sdp
from .messaging import ReliableStream, new_session
from .signaling import SignalingClient

log = logging.getLogger("tether_peer")

LABEL = "tether"


@dataclass
class Timing:
    """The bounds of NEGOTIATION.md §13.1 (defaults), §13.2, §13.3."""

    connect_timeout: float = 10.0  # a connect, and the wait for an answer
    restart_timeout: float = 5.0  # an ICE restart we asked for
    close_timeout: float = 2.0
    bye_grace: float = 1.0  # after a bye, let the sender drive first (§11.1)
    lost_grace: float = 1.5  # after our channel closed or the pc failed
    backoff_first: float = 0.5  # §13.2: >= 250 ms, doubling, capped at 8 s
    backoff_cap: float = 8.0
    resend_interval: float = 1.0  # a re-sent offer at most once a second (§13.3)
    duplicate_quiet: float = 1.0  # a duplicate offer this soon after answering is dropped
    bucket_size: int = 4  # §13.3 budgets
    bucket_refill: float = 2.0
    candidate_buffer: int = 64  # §12


@dataclass
class Quirks:
    """Deliberate misbehaviour, for the bug-case tests. All off: the peer
    follows the documents."""

    # Answerer: drop every offer while set (a peer that stays silent).
    ignore_offers: bool = False
    # Answerer, one shot: answer the next ICE-restart offer of the current
    # session from a brand-new pc, as a peer that lost its pc and ignores the
    # restart marker would (§4.3 "Ignoring it").
    restart_answer_from_new_pc: bool = False
    # Both roles: renegotiate on `peer_joined` (PROTOCOL.md's old wording; §7
    # "both sides react to one re-registration").
    renegotiate_on_peer_joined: bool = False
    # Offerer: answer an `ice_restart` that arrives while a restart offer is
    # outstanding with a new restart offer (today's Rust/browser behaviour,
    # §6.3) instead of re-sending it (planned rule P2).
    supersede_outstanding_restart: bool = False
    # With renegotiate_on_peer_joined or renegotiate(): replace the pc (a new
    # pc's offer / `bye` + `ice_restart`) instead of restarting ICE in place.
    renegotiate_by_replacing: bool = False
    # Offerer: apply the first answer that arrives while an offer is
    # outstanding, whichever offer it names (an offerer that does not read
    # `a=x-tether-offer`, §4.4 "Ignoring it").
    ignore_answer_attribute: bool = False
    # Never give up a connect attempt on our own (no connect_timeout): the
    # remote alone must notice that the pair is dead.
    patient: bool = False


class Bucket:
    """A token bucket of §13.3: `size` tokens, one back every `refill` s."""

    def __init__(self, size: int, refill: float) -> None:
        self.size, self.refill = size, refill
        self.tokens = float(size)
        self.at = time.monotonic()

    def _update(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.size, self.tokens + (now - self.at) / self.refill)
        self.at = now

    def take(self) -> bool:
        self._update()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self) -> float:
        self._update()
        return max(0.0, (1 - self.tokens) * self.refill)


@dataclass
class Offer:
    """The offerer's outstanding offer."""

    origin: sdp.Origin
    seq: int
    restart: bool
    first: bool  # the first offer of its pc
    text: str  # as sent (tagged), for re-sending unchanged
    candidates: list[str]
    sent_at: float
    deadline: float


class Pc:
    """One peer connection of a pair, with tether's bookkeeping."""

    def __init__(self, generation: int, pc: RTCPeerConnection) -> None:
        self.generation = generation
        self.pc = pc
        self.session_id = sdp.new_session_id()
        self.version = 0
        self.channel: Any = None
        self.channel_open = False
        self.retired = False
        self.remote_sdp: Optional[str] = None  # the last remote description applied (untagged)
        self.first_answered = False  # offerer: the first offer's answer was applied
        self.candidates: list[RTCIceCandidate] = []  # buffered before a remote description
        self.restart_since: Optional[float] = None  # a restart we wait to complete
        self.lost = False  # its channel closed
        self.rechecked = False  # checks under the restart's credentials began

    def next_origin(self) -> sdp.Origin:
        self.version += 1
        return sdp.Origin(self.session_id, self.version)

    async def apply_local(self, description: RTCSessionDescription) -> tuple[sdp.Origin, str]:
        """Sets `description` as the local description under this pc's next
        origin (aiortc draws its own), and returns that origin and the local
        SDP as it now stands, carrying that origin."""
        origin = self.next_origin()
        await self.pc.setLocalDescription(
            RTCSessionDescription(sdp.set_origin(description.sdp, origin), description.type)
        )
        local = self.pc.localDescription.sdp
        if sdp.parse_origin(local) != origin:
            local = sdp.set_origin(local, origin)
        return origin, local

    @property
    def state(self) -> str:
        return self.pc.connectionState

    @property
    def usable(self) -> bool:
        return not self.retired and self.state not in ("failed", "closed")

    @property
    def healthy(self) -> bool:
        return self.usable and self.state == "connected" and self.channel_open

    def __repr__(self) -> str:
        return f"pc{self.generation}({self.session_id[:6]}…,{self.state}{',open' if self.channel_open else ''})"


def role_of(local: str, remote: str) -> Optional[str]:
    """§2: the byte-wise smaller id offers."""
    a, b = local.encode("utf-8"), remote.encode("utf-8")
    if a == b:
        return None
    return "offerer" if a < b else "answerer"


class Negotiator:
    """Everything about one remote peer."""

    def __init__(self, peer: "TetherPeer", remote: str) -> None:
        self.peer = peer
        self.remote = remote
        self.role = role_of(peer.peer_id, remote)
        assert self.role is not None
        self.offerer = self.role == "offerer"
        self.t = peer.timing
        self.q = peer.quirks
        self.name = f"{peer.peer_id}->{remote}"
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.pc: Optional[Pc] = None
        self.generation = 0
        self.zombies: list[Pc] = []  # pcs silenced by a quirk, closed at stop
        self.wanted = False
        self.present = False
        self.timers: dict[str, float] = {}
        self.failures = 0
        self.connecting = False  # a connect attempt (by role) is in flight
        # offerer
        self.next_seq = 1
        self.outstanding: Optional[Offer] = None
        self.offer_wanted: Optional[bool] = None  # waiting for a token: restart?
        # answerer
        self.last_offer: Optional[tuple[sdp.Origin, Optional[int]]] = None
        self.last_answer: Optional[str] = None
        self.last_answer_at = 0.0
        self.awaiting_offer = False  # we sent ice_restart and wait for an offer
        self.request_wanted: Optional[bool] = None  # waiting for a token: with bye?
        # budgets (§13.3): ours, and the remote's as we receive them
        self.out_bucket = Bucket(self.t.bucket_size, self.t.bucket_refill)
        self.in_bucket = Bucket(self.t.bucket_size, self.t.bucket_refill)
        self.deferred: Optional[dict] = None
        # counters and a trace for tests
        self.channel_opens = 0
        self.offers_sent = 0
        self.answers_sent = 0
        self.rejections_sent = 0
        self.restarts_applied = 0
        self.received_counts: dict[str, int] = {}
        self.stopping = False
        self.task = asyncio.create_task(self._run(), name=f"negotiator-{self.name}")

    # ---- plumbing ----------------------------------------------------------

    def post(self, *event: Any) -> None:
        self.inbox.put_nowait(event)

    def _note(self, what: str, *args: Any) -> None:
        self.peer.trace(f"{self.name} " + (what % args if args else what))

    def _set_timer(self, name: str, delay: float) -> None:
        self.timers[name] = time.monotonic() + delay

    def _clear_timer(self, *names: str) -> None:
        for name in names:
            self.timers.pop(name, None)

    async def _run(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            due = [n for n, at in self.timers.items() if at <= now]
            for name in due:
                self.timers.pop(name, None)
                try:
                    await self._on_timer(name)
                except Exception:
                    log.exception("%s: timer %s failed", self.name, name)
            wait = min(self.timers.values(), default=now + 0.5) - time.monotonic()
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation
            # that arrives as the queue yields, and this loop would never end.
            if self.inbox.empty():
                getter = asyncio.ensure_future(self.inbox.get())
                done, _ = await asyncio.wait({getter}, timeout=max(0.0, min(wait, 0.5)))
                if getter not in done:
                    getter.cancel()
                    await self._poll()
                    continue
                event = getter.result()
            else:
                event = self.inbox.get_nowait()
            try:
                await self._on_event(event)
            except Exception:
                log.exception("%s: event %s failed", self.name, event[0])
            await self._poll()

    async def _signal(self, kind: str, **fields: Any) -> bool:
        ok = await self.peer.signaling.relay(kind, self.remote, **fields)
        detail = ""
        if kind == "offer":
            tags, body = sdp.untag(fields["sdp"])
            detail = f" seq={tags.seq} restart={tags.ice_restart} o={sdp.parse_origin(body)}"
        elif kind == "answer":
            tags, body = sdp.untag(fields["sdp"])
            detail = f" answers={tags.answers}" + (f" rejected={tags.rejected}" if tags.rejected else "")
        if kind != "candidate":
            self._note("sent %s%s%s", kind, detail, "" if ok else " (signaling down: lost)")
        return ok

    @property
    def offers_received(self) -> int:
        return self.received_counts.get("offer", 0)

    @property
    def byes_received(self) -> int:
        return self.received_counts.get("bye", 0)

    # ---- events ------------------------------------------------------------

    async def _on_event(self, event: tuple) -> None:
        kind = event[0]
        if kind == "signal":
            await self._on_signal(event[1])
        elif kind == "pc_state":
            await self._on_pc_state(event[1])
        elif kind == "channel_open":
            self._on_channel_open(event[1])
        elif kind == "channel_lost":
            self._on_channel_lost(event[1])
        elif kind == "want":
            self.wanted = True
            await self._maybe_connect()
        elif kind == "presence":
            await self._on_presence(event[1])
        elif kind == "registered":
            await self._on_own_registration()
        elif kind == "down":
            self._note("signaling down")
            self._clear_timer("retry")
        elif kind == "call":
            await event[1](self)

    async def _on_signal(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "candidate":
            await self._on_candidate(frame)
            return
        self.received_counts[kind] = self.received_counts.get(kind, 0) + 1
        if kind in ("offer", "answer"):
            tags, body = sdp.untag(frame.get("sdp") or "")
            self._note("got %s seq=%s restart=%s answers=%s rejected=%s o=%s", kind, tags.seq,
                       tags.ice_restart, tags.answers, tags.rejected, sdp.parse_origin(body))
        else:
            self._note("got %s", kind)
        if kind == "offer":
            if self.offerer:
                self._note("offer to the offerer: dropped (§2)")
                return
            await self._receive_budgeted(frame)
        elif kind == "answer":
            if not self.offerer:
                self._note("answer to the answerer: dropped (§2)")
                return
            await self._on_answer(frame)
        elif kind == "ice_restart":
            if not self.offerer:
                self._note("ice_restart to the answerer: dropped (§2)")
                return
            await self._receive_budgeted(frame)
        elif kind == "bye":
            await self._on_bye()

    async def _receive_budgeted(self, frame: dict) -> None:
        """§13.3 receivers: an offer (not a re-send) or ice_restart beyond the
        remote's budget is deferred; only the newest deferred one is kept."""
        costs = True
        if frame["type"] == "offer":
            tags, body = sdp.untag(frame.get("sdp") or "")
            origin = sdp.parse_origin(body)
            costs = origin is None or self._classify(origin, tags.seq) in ("new", "renegotiation")
        if costs and self.deferred is None and not self.in_bucket.take():
            self.deferred = frame
        elif costs and self.deferred is not None:
            self.deferred = frame  # supersedes the older deferred one
        if self.deferred is frame:
            self._note("%s beyond the remote's budget: deferred", frame["type"])
            self._set_timer("deferred", self.in_bucket.wait())
            return
        await self._dispatch(frame)

    async def _dispatch(self, frame: dict) -> None:
        if frame["type"] == "offer":
            await self._on_offer(frame)
        else:
            await self._on_ice_restart()

    async def _on_timer(self, name: str) -> None:
        if name == "deferred":
            frame, self.deferred = self.deferred, None
            if frame is not None:
                if not self.in_bucket.take():
                    self.deferred = frame
                    self._set_timer("deferred", self.in_bucket.wait())
                    return
                await self._dispatch(frame)
        elif name == "resend":
            await self._resend_outstanding()
        elif name == "offer_wait":
            if self.awaiting_offer:
                self._note("no offer came for our ice_restart: forgotten")
                self.awaiting_offer = False
        elif name == "answer_wait":
            await self._answer_wait_over()
        elif name == "connect":
            await self._connect_timed_out()
        elif name == "retry":
            self._note("retry %d", self.failures)
            await self._maybe_connect()
        elif name == "self_drive":
            pc = self.pc
            stalled = pc is None or not pc.usable or pc.lost
            if stalled and not self._healthy and not self._exchange_in_flight:
                self._note("nobody drove the reconnect: driving it")
                await self._maybe_connect(force=True)
        elif name == "restart":
            await self._restart_timed_out()
        elif name == "offer_budget":
            restart, self.offer_wanted = self.offer_wanted, None
            if restart is not None:
                await self._offer(restart)
        elif name == "request_budget":
            with_bye, self.request_wanted = self.request_wanted, None
            if with_bye is not None:
                await self._request_offer(with_bye)

    async def _poll(self) -> None:
        pc = self.pc
        if pc is not None and pc.restart_since is not None and not pc.retired:
            if pc.rechecked and pc.channel_open and ice.succeeded_since_restart(pc.pc):
                self._note("ICE restart complete on %s (%.0f ms)", pc,
                           (time.monotonic() - pc.restart_since) * 1000)
                pc.restart_since = None
                self._clear_timer("restart")

    @property
    def _healthy(self) -> bool:
        return self.pc is not None and self.pc.healthy

    @property
    def _exchange_in_flight(self) -> bool:
        return self.outstanding is not None or self.awaiting_offer

    # ---- presence and signaling (§11) -----------------------------------

    async def _on_presence(self, frame: dict) -> None:
        kind = frame["type"]
        if kind == "peer_left":
            self.present = False
            self._note("peer_left: stop negotiating, keep the pc")
            self._clear_timer("retry", "self_drive", "connect", "restart", "answer_wait")
            self.connecting = False
            return
        # peer_joined (or present in `registered` peers)
        self._note("%s", kind)
        self.present = True
        if self.peer.follow_room:
            self.wanted = True
        if kind != "peer_joined":
            await self._maybe_connect()
            return
        self.failures = 0
        if self.q.renegotiate_on_peer_joined and self.pc is not None and self.pc.usable:
            self._note("quirk: renegotiating on peer_joined")
            await self.renegotiate()
            return
        if self.pc is None or not self.pc.usable:
            await self._maybe_connect(force=True)
        elif self.outstanding is not None:
            await self._resend_outstanding()
        elif self.awaiting_offer:
            await self._request_offer(with_bye=False, resend=True)
        # a healthy pc: nothing (the remote renegotiates itself)

    async def _on_own_registration(self) -> None:
        """§11.4: after our own re-registration we drive, by role."""
        if self.pc is None or not self.pc.usable:
            await self._maybe_connect(force=True)
        elif self.offerer:
            if self.outstanding is not None:
                await self._resend_outstanding()
            elif self.pc.first_answered:
                await self._offer(restart=True, asked_by_us=True)
        else:
            await self._request_offer(with_bye=False, asked_by_us=True)

    # ---- connecting (§5, §13.2) ------------------------------------------

    async def _maybe_connect(self, force: bool = False) -> None:
        if not (self.wanted and self.present and self.peer.signaling.up):
            return
        if self._healthy or (self.connecting and not force):
            return
        if self._exchange_in_flight and not force:
            return
        self._clear_timer("retry")
        self.connecting = False  # this is a new attempt
        self._attempt()
        if self.offerer:
            pc = self.pc
            if self.outstanding is not None:
                await self._resend_outstanding()
            elif pc is not None and pc.usable and pc.first_answered and pc.channel_open and not pc.lost:
                await self._offer(restart=True, asked_by_us=True)  # the channel lives: restart ICE
            else:
                await self._offer(restart=False)
        else:
            replace = self.pc is None or not self.pc.usable or not self.pc.channel_open
            await self._request_offer(with_bye=replace)

    async def _connect_timed_out(self) -> None:
        self.connecting = False
        if self._healthy:
            return
        self.failures += 1
        self._note("connect timed out (failure %d): retire, bye, back off", self.failures)
        if self.pc is not None:
            await self._retire("failed")
        self.outstanding = None
        self.awaiting_offer = False
        self._clear_timer("answer_wait")
        await self._signal("bye")
        if self.wanted and self.present and self.peer.signaling.up:
            delay = min(self.t.backoff_first * 2 ** (self.failures - 1), self.t.backoff_cap)
            self._set_timer("retry", delay)

    def _attempt(self) -> None:
        """A new pc (or a request for one) is a connect attempt, bounded by
        connect_timeout until its channel opens."""
        if not self.connecting:
            self.connecting = True
            if not self.q.patient:
                self._set_timer("connect", self.t.connect_timeout)

    def _connected(self) -> None:
        self.connecting = False
        self.failures = 0
        self._clear_timer("connect", "retry", "self_drive")

    # ---- the pc ------------------------------------------------------------

    def _new_pc(self) -> Pc:
        self.generation += 1
        pc = Pc(self.generation, RTCPeerConnection())
        raw = pc.pc

        @raw.on("connectionstatechange")
        def _state() -> None:
            self.post("pc_state", pc)

        @raw.on("datachannel")
        def _announced(channel: Any) -> None:
            # §3, P8: tether's channel is negotiated; nothing announced in-band is ours.
            self._note("ignoring announced channel %r (§3, P8)", channel.label)
            channel.close()

        # §3: both sides create the channel themselves, negotiated on stream 0, unordered.
        channel = raw.createDataChannel(LABEL, ordered=False, protocol="", negotiated=True, id=0)
        self._take_channel(pc, channel)
        return pc

    def _take_channel(self, pc: Pc, channel: Any) -> None:
        pc.channel = channel
        stream = self.peer.stream(self.remote)

        def opened() -> None:
            if pc.retired or pc is not self.pc or pc.channel is not channel or pc.channel_open:
                return
            if not self.offerer:
                # §3: the answerer announces its side of the channel with one empty message.
                channel.send(b"")
            pc.channel_open = True
            stream.attach(channel, speaks_first=not self.offerer)
            self.post("channel_open", pc)

        @channel.on("open")
        def _open() -> None:
            # §3: the offerer's side counts as open at the answerer's first message.
            if not self.offerer:
                opened()

        @channel.on("message")
        def _message(message: Any) -> None:
            if isinstance(message, str):
                return  # text messages are not part of the protocol (§3)
            if not pc.channel_open:
                opened()  # the first message may come before the open event
            if len(message) == 0:
                return  # the answerer's "ready" (§3), never a frame
            if not pc.retired and pc is self.pc:
                stream.on_frame(channel, message)

        @channel.on("close")
        def _close() -> None:
            stream.detach(channel)
            if pc is self.pc and not pc.retired:
                self.post("channel_lost", pc)

        if channel.readyState == "open":
            opened()

    def _on_channel_open(self, pc: Pc) -> None:
        if pc is not self.pc or pc.retired:
            return
        self.channel_opens += 1
        self._note("channel open on %s", pc)
        if pc.restart_since is not None:
            pc.restart_since = None
            self._clear_timer("restart")
        self._connected()

    def _on_channel_lost(self, pc: Pc) -> None:
        if pc is not self.pc or pc.retired:
            return
        self._note("channel closed on %s", pc)
        pc.channel_open = False
        pc.lost = True
        self._set_timer("self_drive", self.t.lost_grace)

    async def _on_pc_state(self, pc: Pc) -> None:
        if pc is not self.pc or pc.retired:
            return
        self._note("%s is %s", pc, pc.state)
        if pc.state in ("failed", "closed"):
            await self._retire(pc.state)
            self.outstanding = None
            self._clear_timer("answer_wait")
            self._set_timer("self_drive", self.t.lost_grace)

    async def _retire(self, why: str) -> None:
        pc = self.pc
        if pc is None:
            return
        self.pc = None
        pc.retired = True
        self._note("retire %s (%s)", pc, why)
        if pc.channel is not None:
            self.peer.stream(self.remote).detach(pc.channel)
        asyncio.create_task(self._close(pc))

    async def _close(self, pc: Pc) -> None:
        """Closes a pc, waiting at most close_timeout; past it the close
        finishes in the background (§13.1). (Not wait_for: that would wait for
        a cancelled close to unwind, unbounded.)"""
        task = asyncio.ensure_future(pc.pc.close())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.wait({task}, timeout=self.t.close_timeout)

    async def _trickle(self, pc: Pc, candidates: list[str]) -> None:
        """§12: one `candidate` per local candidate, then end-of-candidates."""
        for line in candidates:
            if pc.retired:
                return
            await self._signal("candidate", candidate=line, sdp_mid="0", sdp_mline_index=0)
        await self._signal("candidate", candidate="", sdp_mid=None, sdp_mline_index=None)

    async def _on_candidate(self, frame: dict) -> None:
        pc = self.pc
        text = frame.get("candidate") or ""
        if not text:
            return  # end-of-candidates: ignored (§12)
        if pc is None or pc.retired:
            return
        body = text[len("candidate:"):] if text.startswith("candidate:") else text
        try:
            candidate = candidate_from_sdp(body)
        except Exception:
            self._note("unparsable candidate dropped: %r", text)
            return
        mid = frame.get("sdp_mid") or None  # an empty mid names no media section
        index = frame.get("sdp_mline_index")
        candidate.sdpMid = mid
        candidate.sdpMLineIndex = 0 if index is None and mid is None else index
        if pc.remote_sdp is None:
            key = candidate_to_sdp(candidate)
            if all(candidate_to_sdp(c) != key for c in pc.candidates):
                pc.candidates.append(candidate)
                del pc.candidates[:-self.t.candidate_buffer]
            return
        await self._add_candidate(pc, candidate)

    async def _add_candidate(self, pc: Pc, candidate: RTCIceCandidate) -> None:
        try:
            await pc.pc.addIceCandidate(candidate)
            ice.kick_new_pairs(pc.pc)
        except Exception as err:
            log.info("%s: candidate not added: %s", self.name, err)

    async def _flush_candidates(self, pc: Pc) -> None:
        pending, pc.candidates = pc.candidates, []
        for candidate in pending:
            await self._add_candidate(pc, candidate)

    # ---- offerer (§5, §6.2, §6.3, §8, §9.1, §10) --------------------------

    async def _offer(self, restart: bool, asked_by_us: bool = False) -> None:
        """Sends a new offer: an ICE restart of the usable pc, or the first offer
        of a new pc. Waits for a token of our budget (§13.3)."""
        pc = self.pc
        if restart and (pc is None or not pc.usable or not pc.first_answered):
            restart = False
        if restart and self.outstanding is not None and self.outstanding.first:
            self._note("restart satisfied by the outstanding first offer (P3)")
            return
        if not self.out_bucket.take():
            self._note("offer waits for a token")
            self.offer_wanted = restart if self.offer_wanted is None else (self.offer_wanted and restart)
            self._set_timer("offer_budget", self.out_bucket.wait())
            return
        if not restart:
            await self._retire("replaced") if pc is not None else None
            self._attempt()
            pc = self._new_pc()
            self.pc = pc
        assert pc is not None
        raw = pc.pc
        try:
            if restart:
                ice.new_local_credentials(raw)
            origin, local = await pc.apply_local(await raw.createOffer())
        except Exception as err:
            self._note("cannot create an offer: %r", err)
            await self._retire("failed")
            return
        body, candidates = sdp.split_candidates(local)
        seq = self.next_seq
        self.next_seq += 1
        text = sdp.tag_offer(body, seq, restart)
        now = time.monotonic()
        self.outstanding = Offer(origin, seq, restart, not restart, text, candidates, now,
                                 now + self.t.connect_timeout)
        self._set_timer("answer_wait", self.t.connect_timeout)
        if restart and asked_by_us:
            pc.restart_since = now
            pc.rechecked = False
            self._set_timer("restart", self.t.restart_timeout)
        self.offers_sent += 1
        await self._signal("offer", sdp=text)
        await self._trickle(pc, candidates)

    async def _resend_outstanding(self) -> None:
        offer = self.outstanding
        pc = self.pc
        if offer is None or pc is None:
            return
        now = time.monotonic()
        if now - offer.sent_at < self.t.resend_interval:
            self._note("outstanding offer seq %d sent %.0f ms ago: re-sent in a moment (§13.3)",
                       offer.seq, (now - offer.sent_at) * 1000)
            self._set_timer("resend", offer.sent_at + self.t.resend_interval - now)
            return
        self._clear_timer("resend")
        offer.sent_at = now
        self._note("re-sending outstanding offer seq %d unchanged", offer.seq)
        await self._signal("offer", sdp=offer.text)
        await self._trickle(pc, offer.candidates)

    async def _on_ice_restart(self) -> None:
        """§6.3 / P2: re-send what is outstanding, else offer."""
        pc = self.pc
        if self.outstanding is not None:
            if self.q.supersede_outstanding_restart and self.outstanding.restart:
                self._note("quirk: superseding the outstanding restart offer")
                await self._offer(restart=True)
            else:
                await self._resend_outstanding()
        elif pc is not None and pc.usable and pc.first_answered:
            await self._offer(restart=True)
        else:
            await self._offer(restart=False)

    async def _on_answer(self, frame: dict) -> None:
        tags, body = sdp.untag(frame.get("sdp") or "")
        offer, pc = self.outstanding, self.pc
        if pc is None or offer is None:
            self._note("answer with no offer outstanding: dropped")
            return
        if tags.answers is not None and not self.q.ignore_answer_attribute:
            sid, version, seq = tags.answers
            if seq is not None:
                match = sid == offer.origin.session_id and seq == offer.seq
            else:
                match = sid == offer.origin.session_id and version == offer.origin.version
            if not match:
                self._note("answer names another offer (%s): dropped", tags.answers)
                return
        self.outstanding = None
        self._clear_timer("answer_wait")
        if tags.rejected is not None:
            await self._on_rejection(tags.rejected)
            return
        if offer.restart and pc.remote_sdp is not None and sdp.fingerprints_differ(pc.remote_sdp, body):
            self._note("restart answered with another DTLS identity: replacement (§9.3)")
            await self._retire("remote replaced its pc")
            await self._offer(restart=False)
            return
        try:
            await pc.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        except Exception as err:
            self._note("cannot apply the answer: %r: retire, bye", err)
            await self._retire("failed")
            await self._signal("bye")
            return
        pc.remote_sdp = body
        if offer.first:
            pc.first_answered = True
        else:
            creds = sdp.ice_credentials(body)
            if creds is not None:
                ice.set_remote_credentials(pc.pc, *creds)
                ice.recheck(pc.pc)
                pc.rechecked = True
                self.restarts_applied += 1
        await self._flush_candidates(pc)

    async def _on_rejection(self, reason: str) -> None:
        self._note("offer rejected: %s", reason)
        if reason == "unknown-session":
            await self._retire("closed: unknown-session")
            if self.wanted or self.connecting:
                await self._offer(restart=False)
        else:
            await self._retire("failed: rejected")
            if self.connecting:
                self._clear_timer("connect")
                await self._connect_timed_out()

    async def _answer_wait_over(self) -> None:
        offer = self.outstanding
        if offer is None:
            return
        self.outstanding = None
        if offer.first:
            self._note("first offer seq %d unanswered: retire, bye", offer.seq)
            await self._retire("failed: unanswered")
            await self._signal("bye")
            if not self.connecting:
                self.failures += 1
                self._set_timer("retry", min(self.t.backoff_first * 2 ** (self.failures - 1), self.t.backoff_cap))
        else:
            self._note("restart offer seq %d unanswered: forgotten (§8.7)", offer.seq)

    async def _restart_timed_out(self) -> None:
        pc = self.pc
        if pc is None or pc.restart_since is None:
            return
        self._note("our ICE restart did not complete in time: replacement (§8.6)")
        pc.restart_since = None
        if self.offerer:
            await self._offer(restart=False)
        else:
            await self._retire("restart timed out")
            await self._request_offer(with_bye=True)

    # ---- answerer (§5, §6.1, §8, §9.2, §10) -------------------------------

    async def _request_offer(self, with_bye: bool, resend: bool = False,
                             asked_by_us: bool = False) -> None:
        """Asks for an offer: `bye` then `ice_restart` when we have no pc (or
        replace ours), a plain `ice_restart` to restart ICE of our pc."""
        if not resend and not self.out_bucket.take():
            self._note("ice_restart waits for a token")
            self.request_wanted = with_bye or bool(self.request_wanted)
            self._set_timer("request_budget", self.out_bucket.wait())
            return
        if with_bye:
            await self._retire("replaced")
            self._attempt()
            await self._signal("bye")
        self.awaiting_offer = True
        self._set_timer("offer_wait", self.t.connect_timeout)
        if asked_by_us and self.pc is not None:
            self.pc.restart_since = time.monotonic()
            self.pc.rechecked = False
            self._set_timer("restart", self.t.restart_timeout)
        await self._signal("ice_restart")

    def _classify(self, origin: sdp.Origin, seq: Optional[int]) -> str:
        """§6.1."""
        pc = self.pc
        if pc is None or pc.retired or self.last_offer is None:
            return "new"
        last, last_seq = self.last_offer
        if origin.session_id != last.session_id:
            return "new"
        if seq is not None and last_seq is not None:
            if seq > last_seq:
                return "renegotiation"
            return "duplicate" if seq == last_seq else "stale"
        return "duplicate" if origin.version == last.version else "renegotiation"

    async def _on_offer(self, frame: dict) -> None:
        tags, body = sdp.untag(frame.get("sdp") or "")
        origin = sdp.parse_origin(body)
        if origin is None:
            self._note("offer without a usable o= line: dropped")
            return
        if self.q.ignore_offers:
            self._note("quirk: ignoring the offer")
            return
        kind = self._classify(origin, tags.seq)
        pc = self.pc
        if kind == "renegotiation" and self.q.restart_answer_from_new_pc and tags.ice_restart:
            self.q.restart_answer_from_new_pc = False
            self._note("quirk: answering this restart offer from a brand-new pc")
            if pc is not None:
                ice.silence(pc.pc)  # it vanished: no goodbye on the wire
                pc.retired = True
                if pc.channel is not None:
                    self.peer.stream(self.remote).detach(pc.channel)
                self.zombies.append(pc)
                self.pc = None
            await self._answer_new_session(origin, tags.seq, body)
            return
        if kind == "renegotiation" and pc is not None and pc.remote_sdp is not None \
                and sdp.fingerprints_differ(pc.remote_sdp, body):
            self._note("renegotiation with another DTLS identity: a new session (§9.3)")
            kind = "new"
        self._note("offer is %s", kind)
        if kind == "stale":
            return
        if kind == "duplicate":
            if self.last_answer is None:
                return
            if time.monotonic() - self.last_answer_at < self.t.duplicate_quiet:
                self._note("duplicate right after answering: dropped (its answer is on the way)")
                return
            self.last_answer_at = time.monotonic()
            await self._signal("answer", sdp=self.last_answer)
            return
        self.awaiting_offer = False
        self._clear_timer("offer_wait")
        if kind == "new":
            if tags.ice_restart:
                await self._retire("unknown-session")
                self.last_offer, self.last_answer = None, None
                self.rejections_sent += 1
                await self._signal("answer", sdp=sdp.rejection(origin, tags.seq, "unknown-session"))
                if self.wanted:
                    await self._request_offer(with_bye=False)
                return
            await self._retire("new session") if pc is not None else None
            await self._answer_new_session(origin, tags.seq, body)
        else:
            await self._answer_renegotiation(origin, tags.seq, body)

    async def _answer_new_session(self, origin: sdp.Origin, seq: Optional[int], body: str) -> None:
        pc = self._new_pc()
        self.pc = pc
        try:
            await pc.pc.setRemoteDescription(RTCSessionDescription(body, "offer"))
            pc.remote_sdp = body
            await self._flush_candidates(pc)
            await self._send_answer(pc, origin, seq)
        except Exception as err:
            await self._answer_failed(origin, seq, err)
            return
        self._attempt()

    async def _answer_renegotiation(self, origin: sdp.Origin, seq: Optional[int], body: str) -> None:
        pc = self.pc
        assert pc is not None
        creds = sdp.ice_credentials(body)
        old = sdp.ice_credentials(pc.remote_sdp or "")
        restart = creds is not None and creds != old
        try:
            if restart:
                ice.new_local_credentials(pc.pc)
                ice.set_remote_credentials(pc.pc, *creds)
            await pc.pc.setRemoteDescription(RTCSessionDescription(body, "offer"))
            pc.remote_sdp = body
            await self._send_answer(pc, origin, seq)
        except Exception as err:
            await self._answer_failed(origin, seq, err)
            return
        if restart:
            ice.recheck(pc.pc)
            pc.rechecked = True
            self.restarts_applied += 1

    async def _send_answer(self, pc: Pc, origin: sdp.Origin, seq: Optional[int]) -> None:
        _, local = await pc.apply_local(await pc.pc.createAnswer())
        body, candidates = sdp.split_candidates(local)
        text = sdp.tag_answer(body, origin, seq)
        self.last_offer = (origin, seq)
        self.last_answer = text
        self.last_answer_at = time.monotonic()
        self.answers_sent += 1
        await self._signal("answer", sdp=text)
        await self._trickle(pc, candidates)

    async def _answer_failed(self, origin: sdp.Origin, seq: Optional[int], err: Exception) -> None:
        self._note("cannot take the offer: %r: retire, reject failed", err)
        await self._retire("failed")
        self.last_offer, self.last_answer = None, None
        self.rejections_sent += 1
        await self._signal("answer", sdp=sdp.rejection(origin, seq, "failed"))

    # ---- both roles: bye (§11.1) -----------------------------------------

    async def _on_bye(self) -> None:
        pc = self.pc
        if pc is None:
            self._note("bye without a pc: ignored")
            return
        if self.offerer and self.outstanding is not None and self.outstanding.first:
            self._note("bye while our first offer is unanswered: ignored (§5)")
            return
        await self._retire("closed: bye")
        self.outstanding = None
        self._clear_timer("answer_wait", "restart")
        self._set_timer("self_drive", self.t.bye_grace)

    # ---- tests ---------------------------------------------------------------

    async def renegotiate(self) -> None:
        """Starts a renegotiation now, by role, whatever is in flight: an
        ICE-restart offer (superseding an outstanding one) or an `ice_restart`."""
        replace = self.q.renegotiate_by_replacing
        self._note("renegotiating (%s)", "replacement" if replace else "ICE restart")
        if self.offerer:
            await self._offer(restart=not replace, asked_by_us=True)
        else:
            await self._request_offer(with_bye=replace, asked_by_us=not replace)

    # ---- shutdown ------------------------------------------------------------

    async def stop(self) -> None:
        self.stopping = True
        self.task.cancel()
        await asyncio.wait({self.task}, timeout=self.t.close_timeout)
        pcs = [p for p in [self.pc, *self.zombies] if p is not None]
        self.pc = None
        for pc in pcs:
            await self._close(pc)


class TetherPeer:
    """One registered peer. `send(remote, text)` sends reliably;
    `received[remote]` lists what was delivered, in order."""

    def __init__(self, peer_id: str, signal_url: str, token: str, room: Optional[str] = None,
                 timing: Optional[Timing] = None, quirks: Optional[Quirks] = None,
                 follow_room: bool = True) -> None:
        self.peer_id = peer_id
        self.room = room
        self.timing = timing or Timing()
        self.quirks = quirks or Quirks()
        self.follow_room = follow_room
        self.session = new_session()
        self.negotiators: dict[str, Negotiator] = {}
        self._streams: dict[str, ReliableStream] = {}
        self.received: dict[str, list[str]] = {}
        self.changed = asyncio.Event()
        self.lines: list[str] = []
        self._t0 = time.monotonic()
        self.signaling = SignalingClient(signal_url, peer_id, token, room, self._on_message,
                                         self._on_registered, self._on_down)

    # ---- application ----------------------------------------------------

    async def start(self) -> None:
        self.signaling.start()

    async def stop(self) -> None:
        for negotiator in list(self.negotiators.values()):
            await negotiator.stop()
        await self.signaling.stop()

    def negotiator(self, remote: str) -> Negotiator:
        if remote not in self.negotiators:
            self.negotiators[remote] = Negotiator(self, remote)
        return self.negotiators[remote]

    def stream(self, remote: str) -> ReliableStream:
        if remote not in self._streams:
            self.received.setdefault(remote, [])

            def deliver(payload: bytes, remote: str = remote) -> None:
                self.received[remote].append(payload.decode("utf-8", "replace"))
                self._wake()

            self._streams[remote] = ReliableStream(self.session, deliver, f"{self.peer_id}<-{remote}")
        return self._streams[remote]

    async def send(self, remote: str, text: str) -> asyncio.Future:
        """Queues a message to `remote` (it is then wanted, §1)."""
        future = await self.stream(remote).send(text.encode("utf-8"))
        self.negotiator(remote).post("want")
        return future

    def connect(self, remote: str) -> None:
        self.negotiator(remote).post("want")

    def healthy(self, remote: str) -> bool:
        n = self.negotiators.get(remote)
        return n is not None and n._healthy

    async def call(self, remote: str, fn: Callable[[Negotiator], Any]) -> None:
        """Runs `fn(negotiator)` (a coroutine function) inside the pair's task."""
        self.negotiator(remote).post("call", fn)

    def trace(self, line: str) -> None:
        stamp = f"{time.monotonic() - self._t0:8.3f}"
        self.lines.append(f"{stamp} {line}")
        log.info("%s %s", stamp, line)
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    # ---- signaling ----------------------------------------------------------

    async def _on_registered(self, frame: dict) -> None:
        first = self.signaling.registrations == 1
        self.trace(f"registered replaced={frame.get('replaced')} peers={frame.get('peers')}")
        if not first:
            for negotiator in self.negotiators.values():
                negotiator.post("registered")
        for remote in frame.get("peers") or []:
            if role_of(self.peer_id, remote) is not None:
                self.negotiator(remote).post("presence", {"type": "present", "peer_id": remote})

    async def _on_down(self) -> None:
        self.trace("signaling down")
        for negotiator in self.negotiators.values():
            negotiator.post("down")

    async def _on_message(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind in ("peer_joined", "peer_left"):
            remote = frame.get("peer_id")
            if isinstance(remote, str) and role_of(self.peer_id, remote) is not None:
                if kind == "peer_joined" or remote in self.negotiators:
                    self.negotiator(remote).post("presence", frame)
            return
        if kind == "error":
            self.trace(f"error {frame.get('code')}: {frame.get('message')}")
            return
        remote = frame.get("from")
        if not isinstance(remote, str) or role_of(self.peer_id, remote) is None:
            return
        if remote not in self.negotiators:
            # §2: only an offer to an answerer or an ice_restart to an offerer
            # starts a pair.
            starts = (kind == "offer" and role_of(self.peer_id, remote) == "answerer") or (
                kind == "ice_restart" and role_of(self.peer_id, remote) == "offerer")
            if not starts:
                return
        self.negotiator(remote).post("signal", frame)
