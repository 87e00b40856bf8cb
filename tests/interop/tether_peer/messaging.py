"""Reliable messaging over the data channel (docs/MESSAGING.md): Hello, Data
and Ack frames, sequence numbers, replay across channels, duplicate
suppression. Written from docs/MESSAGING.md only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

log = logging.getLogger("tether_peer.messaging")

HELLO, DATA, ACK = 0x01, 0x02, 0x03
VERSION = 1
HELLO_SIZE = 34
ACK_SIZE = 9
MAX_MESSAGE = 65_536  # one data-channel message (NEGOTIATION.md §3)
MAX_PAYLOAD = MAX_MESSAGE - 9
HELLO_REPEATS = (0.5, 1.5, 4.0)  # after the channel opened, while no Hello came
EARLY_LIMIT = 8192  # rule 4: frames kept ahead of a gap (the replay buffer's message count)
ACK_EVERY = 32
ACK_DELAY = 0.010


@dataclass(frozen=True)
class Hello:
    session: int
    resume_from: int
    peer_session: int
    delivered: int


@dataclass(frozen=True)
class Data:
    seq: int
    payload: bytes


@dataclass(frozen=True)
class Ack:
    delivered: int


def encode_hello(h: Hello) -> bytes:
    return struct.pack(">BBQQQQ", HELLO, VERSION, h.session, h.resume_from, h.peer_session, h.delivered)


def encode_data(seq: int, payload: bytes) -> bytes:
    return struct.pack(">BQ", DATA, seq) + payload


def encode_ack(delivered: int) -> bytes:
    return struct.pack(">BQ", ACK, delivered)


def decode(frame: bytes) -> Optional[object]:
    """A frame, or None when it must be dropped (empty, unknown type, short,
    trailing bytes after Hello/Ack, other version)."""
    if not frame:
        return None
    kind = frame[0]
    if kind == HELLO:
        if len(frame) != HELLO_SIZE or frame[1] != VERSION:
            return None
        _, _, session, resume_from, peer_session, delivered = struct.unpack(">BBQQQQ", frame)
        return Hello(session, resume_from, peer_session, delivered)
    if kind == DATA:
        if len(frame) < 9:
            return None
        (seq,) = struct.unpack(">Q", frame[1:9])
        return Data(seq, bytes(frame[9:]))
    if kind == ACK:
        if len(frame) != ACK_SIZE:
            return None
        (delivered,) = struct.unpack(">Q", frame[1:9])
        return Ack(delivered)
    return None


class NotDelivered(Exception):
    """The message was withdrawn before it was ever put on a channel (rule 6)."""


@dataclass
class _Pending:
    payload: bytes
    deadline: Optional[float]
    done: asyncio.Future


class ReliableStream:
    """The stream between this peer and one remote peer (rules 1-7).

    `attach(channel)` on every newly opened channel (an object with `send(bytes)`),
    `on_frame(channel, bytes)` for what arrives on it, `detach(channel)` when it
    closes. Delivered messages go to `deliver(payload)`.
    """

    def __init__(self, session: int, deliver: Callable[[bytes], None], name: str = "",
                 capacity: int = 8192) -> None:
        assert session != 0
        self.session = session
        self._deliver = deliver
        self._name = name
        self._capacity = capacity
        # send side
        self.next_seq = 1
        self.acked = 0
        self._inflight: deque[tuple[int, bytes, asyncio.Future]] = deque()  # seq after acked
        self._pending: deque[_Pending] = deque()  # never put on a channel yet
        self._room = asyncio.Event()
        self._room.set()
        # receive side
        self.peer_session = 0
        self.delivered = 0
        self._unacked = 0
        self._ack_timer: Optional[asyncio.TimerHandle] = None
        # the current channel
        self._channel: Any = None
        self._peer_hello = False
        self._speaks_first = True  # rule 1: the answerer says Hello first
        self._early: dict[int, bytes] = {}  # rule 4: ahead of a gap, by seq
        self._before_hello: dict[int, bytes] = {}  # rule 4: overtook the Hello
        self._hello_timers: list[asyncio.TimerHandle] = []
        self._sent_upto = 0  # highest seq put on the current channel
        # counters for tests and logs
        self.duplicates_dropped = 0
        self.protocol_errors = 0
        self.hellos_received = 0

    # ---- application side ------------------------------------------------

    async def send(self, payload: bytes, timeout: Optional[float] = None) -> asyncio.Future:
        """Queues one message; returns a future that completes when the peer
        acknowledged it (or fails with NotDelivered at its deadline if it never
        went out). Waits while the buffer is full."""
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"message over {MAX_PAYLOAD} bytes")
        loop = asyncio.get_running_loop()
        while len(self._pending) + len(self._inflight) >= self._capacity:
            self._room.clear()
            await self._room.wait()
        deadline = None if timeout is None else loop.time() + timeout
        done = loop.create_future()
        self._pending.append(_Pending(payload, deadline, done))
        if deadline is not None:
            loop.call_at(deadline, self._expire)
        self._flush()
        return done

    @property
    def unacknowledged(self) -> int:
        return len(self._inflight) + len(self._pending)

    # ---- channel side ----------------------------------------------------

    def attach(self, channel: Any, speaks_first: bool = True) -> None:
        """A newly opened channel (rule 1): the answerer (speaks_first) says
        Hello at once and again while the peer's Hello has not come on it;
        the offerer answers each of the peer's Hellos."""
        self._cancel_hello_timers()
        self._channel = channel
        self._peer_hello = False
        self._speaks_first = speaks_first
        self._before_hello = {}
        self._sent_upto = self.acked
        if not speaks_first:
            return
        self._send_hello()
        loop = asyncio.get_running_loop()
        for delay in HELLO_REPEATS:
            self._hello_timers.append(loop.call_later(delay, self._repeat_hello, channel))

    def detach(self, channel: Any) -> None:
        if channel is self._channel:
            self._cancel_hello_timers()
            self._channel = None
            self._peer_hello = False

    @property
    def channel_ready(self) -> bool:
        return self._channel is not None and self._peer_hello

    def on_frame(self, channel: Any, frame: bytes) -> None:
        if channel is not self._channel:
            log.debug("%s: frame of a channel that is not current: dropped", self._name)
            return  # rule 7
        decoded = decode(frame)
        if decoded is None:
            self.protocol_errors += 1
            log.warning("%s: malformed frame dropped (%d bytes)", self._name, len(frame))
            return
        if isinstance(decoded, Hello):
            self._on_hello(decoded)
        elif isinstance(decoded, Data):
            self._on_data(decoded)
        else:
            self._on_ack(decoded.delivered)

    # ---- rules -------------------------------------------------------------

    def _on_hello(self, hello: Hello) -> None:
        self.hellos_received += 1
        if hello.session == 0:
            self.protocol_errors += 1
            return
        if hello.session != self.peer_session:  # rule 2: a stream new to us
            log.info("%s: peer stream %x, resuming after %d", self._name, hello.session,
                     hello.resume_from - 1)
            self.peer_session = hello.session
            self.delivered = max(hello.resume_from, 1) - 1
            self._unacked = 0
            self._early = {}
        if not self._speaks_first:
            self._send_hello()  # rule 1: the offerer answers every Hello
        if hello.peer_session == self.session:
            self._on_ack(hello.delivered)
        if not self._peer_hello:
            self._peer_hello = True
            self._cancel_hello_timers()
            self._sent_upto = self.acked  # rule 3: replay everything after acked
            waiting = self._before_hello
            self._before_hello = {}
            for seq in sorted(waiting):
                self._on_data(Data(seq, waiting[seq]))
            self._flush()

    def _on_data(self, data: Data) -> None:
        if not self._peer_hello:
            # Rule 4: the unordered channel let it overtake the peer's Hello.
            waiting = self._before_hello
            if data.seq not in waiting and len(waiting) >= EARLY_LIMIT:
                self.protocol_errors += 1
                return
            waiting[data.seq] = data.payload
            return
        early = self._early
        if data.seq <= self.delivered or data.seq in early:  # rule 4: duplicate
            self.duplicates_dropped += 1
            self._send_ack()
            return
        if data.seq != self.delivered + 1:
            if data.seq - self.delivered > EARLY_LIMIT:
                self.protocol_errors += 1
                log.warning("%s: Data seq %d after %d: gap, dropped", self._name, data.seq, self.delivered)
                return
            early[data.seq] = data.payload  # rule 4: waits for the gap to fill
            return
        self._accept(data.payload, data.seq)
        while self.delivered + 1 in early:
            self._accept(early.pop(self.delivered + 1), self.delivered + 1)

    def _accept(self, payload: bytes, seq: int) -> None:
        self.delivered = seq
        self._deliver(payload)
        self._unacked += 1
        if self._unacked >= ACK_EVERY:
            self._send_ack()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_ack)

    def _on_ack(self, delivered: int) -> None:
        if delivered >= self.next_seq:  # above anything ever sent
            self.protocol_errors += 1
            log.warning("%s: Ack %d above sent %d: dropped", self._name, delivered, self.next_seq - 1)
            return
        while self._inflight and self._inflight[0][0] <= delivered:
            _, _, done = self._inflight.popleft()
            if not done.done():
                done.set_result(True)
        if delivered > self.acked:
            self.acked = delivered
            self._room.set()

    def _send_ack(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self._unacked = 0
        if self._channel is not None and self.peer_session != 0:
            self._put(encode_ack(self.delivered))

    def _flush(self) -> None:
        """Sends, in order, what the current channel has not carried yet."""
        if not self.channel_ready:
            return
        for seq, payload, _ in self._inflight:
            if seq > self._sent_upto:
                if not self._put(encode_data(seq, payload)):
                    return
                self._sent_upto = seq
        while self._pending and self.channel_ready:
            item = self._pending.popleft()
            seq = self.next_seq
            self.next_seq += 1
            self._inflight.append((seq, item.payload, item.done))
            if not self._put(encode_data(seq, item.payload)):
                return
            self._sent_upto = seq

    def _expire(self) -> None:
        now = asyncio.get_running_loop().time()
        kept = deque()
        for item in self._pending:
            if item.deadline is not None and item.deadline <= now:
                if not item.done.done():
                    item.done.set_exception(NotDelivered("not delivered before its deadline"))
            else:
                kept.append(item)
        self._pending = kept
        self._room.set()

    def _send_hello(self) -> None:
        self._put(encode_hello(Hello(self.session, self.acked + 1, self.peer_session, self.delivered)))

    def _repeat_hello(self, channel: Any) -> None:
        if channel is self._channel and not self._peer_hello:
            self._send_hello()

    def _cancel_hello_timers(self) -> None:
        for timer in self._hello_timers:
            timer.cancel()
        self._hello_timers.clear()

    def _put(self, frame: bytes) -> bool:
        channel = self._channel
        if channel is None:
            return False
        try:
            channel.send(frame)
            return True
        except Exception as err:  # the channel closed under us
            log.info("%s: send failed (%s): channel detached", self._name, err)
            self.detach(channel)
            return False


def new_session() -> int:
    """A random nonzero 64-bit stream id, once per process (MESSAGING.md State)."""
    return secrets.randbits(64) or 1

