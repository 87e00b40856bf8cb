"""A client of the tether signaling relay (docs/PROTOCOL.md): one WebSocket,
one JSON object per TEXT frame, `register`, the five relay messages,
presence, `ping`. Reconnects by itself with a new `generation` of the same
`session`. Written from docs/PROTOCOL.md only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any, Awaitable, Callable, Optional

import websockets

log = logging.getLogger("tether_peer.signaling")

PROTOCOL_VERSION = 1
RELAY_TYPES = ("offer", "answer", "candidate", "ice_restart", "bye")
# Close codes after which reconnecting cannot help (PROTOCOL.md §5).
FATAL_CLOSES = {4001, 4002, 4008}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_token(secret: bytes, peer_id: str, ttl_seconds: int = 3600) -> str:
    """A signed token (PROTOCOL.md §6): v1.<claims>.<signature>."""
    claims = _b64url(json.dumps({"sub": peer_id, "exp": int(time.time()) + ttl_seconds},
                                separators=(",", ":")).encode("utf-8"))
    signed = f"v1.{claims}"
    signature = _b64url(hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest())
    return f"{signed}.{signature}"


Handler = Callable[[dict], Awaitable[None]]


class SignalingClient:
    """Keeps one registration up. `on_message(frame)` gets every frame from
    the server after `registered` (relayed messages, presence, errors);
    `on_registered(frame)` every `registered` (the first and each
    re-registration); `on_down()` each loss of the connection."""

    def __init__(self, url: str, peer_id: str, token: str, room: Optional[str],
                 on_message: Handler, on_registered: Handler,
                 on_down: Callable[[], Awaitable[None]],
                 ping_every: float = 5.0, dead_after: float = 10.0) -> None:
        self.url = url
        self.peer_id = peer_id
        self.token = token
        self.room = room
        self._on_message = on_message
        self._on_registered = on_registered
        self._on_down = on_down
        self._ping_every = ping_every
        self._dead_after = dead_after
        self._session = secrets.token_hex(8)
        self._generation = 0
        self._ws: Any = None
        self._task: Optional[asyncio.Task] = None
        self._stopping = False
        self._next_id = 1
        self.registered = asyncio.Event()
        self.fatal: Optional[str] = None
        self.registrations = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"signaling-{self.peer_id}")

    async def stop(self) -> None:
        """Closes the socket and ends the client, each bounded (a close that
        does not finish is left behind rather than waited for)."""
        self._stopping = True
        ws = self._ws
        if ws is not None:
            closing = asyncio.ensure_future(ws.close())
            closing.add_done_callback(lambda t: t.cancelled() or t.exception())
            await asyncio.wait({closing}, timeout=2)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2)

    @property
    def up(self) -> bool:
        return self.registered.is_set()

    async def relay(self, kind: str, to: str, **fields: Any) -> bool:
        """Sends one relay message; False when signaling is down (the message is
        lost, as the relay would lose it)."""
        assert kind in RELAY_TYPES
        frame = {"type": kind, "to": to, "id": self._next_id}
        self._next_id += 1
        frame.update(fields)
        return await self._send(frame)

    async def ping(self, nonce: Optional[str] = None) -> bool:
        frame: dict[str, Any] = {"type": "ping"}
        if nonce is not None:
            frame["nonce"] = nonce
        return await self._send(frame)

    async def sever(self) -> None:
        """Drops the socket without a close handshake (tests: a dead network)."""
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    async def _send(self, frame: dict) -> bool:
        ws = self._ws
        if ws is None or not self.registered.is_set():
            log.info("%s: signaling down, %s not sent", self.peer_id, frame.get("type"))
            return False
        try:
            await ws.send(json.dumps(frame))
            return True
        except Exception as err:
            log.info("%s: send failed: %s", self.peer_id, err)
            return False

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._session_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.info("%s: signaling ended: %r", self.peer_id, err)
            was_up = self.registered.is_set()
            self.registered.clear()
            self._ws = None
            if was_up:
                await self._on_down()
            if self._stopping or self.fatal:
                return
            failures += 1
            await asyncio.sleep(min(0.25 * 2 ** (failures - 1), 4.0))

    async def _session_once(self) -> None:
        self._generation += 1
        async with websockets.connect(self.url, open_timeout=5, close_timeout=2,
                                      max_size=1 << 20, ping_interval=None) as ws:
            self._ws = ws
            register = {"type": "register", "version": PROTOCOL_VERSION, "peer_id": self.peer_id,
                        "token": self.token, "session": self._session,
                        "generation": self._generation}
            if self.room is not None:
                register["room"] = self.room
            await ws.send(json.dumps(register))
            pinger = asyncio.create_task(self._keepalive(ws))
            try:
                last_heard = time.monotonic()
                while not self._stopping:
                    remaining = self._dead_after - (time.monotonic() - last_heard)
                    receiving = asyncio.ensure_future(ws.recv())
                    done, _ = await asyncio.wait({receiving}, timeout=max(remaining, 0.1))
                    if receiving not in done:
                        receiving.cancel()
                        raise ConnectionError(f"nothing heard for {self._dead_after:.0f} s")
                    raw = receiving.result()
                    last_heard = time.monotonic()
                    if isinstance(raw, bytes):
                        continue
                    try:
                        frame = json.loads(raw)
                    except ValueError:
                        continue
                    if not isinstance(frame, dict):
                        continue
                    kind = frame.get("type")
                    if kind == "registered":
                        self.registrations += 1
                        self.registered.set()
                        await self._on_registered(frame)
                    elif kind == "pong":
                        continue
                    elif kind == "error":
                        code = frame.get("code")
                        log.info("%s: error %s: %s", self.peer_id, code, frame.get("message"))
                        if code in ("auth_failed", "version_unsupported", "stale_generation"):
                            self.fatal = code
                        if self.registered.is_set():
                            await self._on_message(frame)
                    elif self.registered.is_set():
                        await self._on_message(frame)
            finally:
                pinger.cancel()

    async def _keepalive(self, ws: Any) -> None:
        """A `ping` message every few seconds (PROTOCOL.md §3), so a dead link is
        noticed by silence."""
        n = 0
        while True:
            await asyncio.sleep(self._ping_every)
            n += 1
            try:
                await ws.send(json.dumps({"type": "ping", "nonce": f"k{n}"}))
            except Exception:
                return
