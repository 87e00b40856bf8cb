"""Processes and waits for the interop tests: `tether serve` on a free
loopback port, `tether chat --json` driven through stdin, the Python peer,
and message traffic both ways. Every wait has a deadline and says what it
waited for when it fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from tether_peer import TetherPeer, mint_token

HERE = Path(__file__).resolve().parent


class WaitFailed(AssertionError):
    pass


async def wait_until(cond: Callable[[], Any], timeout: float, what: str,
                     wake: Callable[[], list[asyncio.Event]] = lambda: [],
                     detail: Callable[[], str] = lambda: "") -> Any:
    """Waits until `cond()` is truthy, woken by the events `wake()` returns
    (and at least every 50 ms), for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            extra = detail()
            raise WaitFailed(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{extra}" if extra else ""))
        waiters = [asyncio.ensure_future(e.wait()) for e in wake()]
        try:
            if waiters:
                await asyncio.wait(waiters, timeout=min(left, 0.05))
            else:
                await asyncio.sleep(min(left, 0.05))
        finally:
            for w in waiters:
                w.cancel()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`tether serve` on 127.0.0.1, port chosen by the OS (`--listen 127.0.0.1:0`)."""

    def __init__(self, binary: str, secret: str, logdir: Path) -> None:
        self.binary, self.secret, self.logdir = binary, secret, logdir
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.url = ""
        self._log: Any = None

    async def start(self) -> str:
        """Starts the server on a port the OS just handed out and waits for
        /healthz. (`--listen 127.0.0.1:0` works too, but the line naming the
        port sits in a block-buffered stdout when that is a pipe.) A port taken
        meanwhile makes the server exit: then another port is tried."""
        for attempt in range(3):
            port = free_port()
            self._log = open(self.logdir / f"serve-{attempt}.log", "wb")
            env = dict(os.environ, TETHER_SECRET=self.secret)
            self.proc = await asyncio.create_subprocess_exec(
                self.binary, "serve", "--listen", f"127.0.0.1:{port}",
                stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=self._log, env=env)
            if await self._healthy(port, 15):
                self.url = f"ws://127.0.0.1:{port}/ws"
                return self.url
            await self.stop()
        raise WaitFailed("tether serve did not come up on a free port (3 tries)")

    async def _healthy(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                return False
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
                writer.write(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                await writer.drain()
                head = await asyncio.wait_for(reader.read(64), 2)
                writer.close()
                if b" 200 " in head:
                    return True
            except (OSError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.05)  # polling a condition with a deadline
        return False

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._log is not None:
            self._log.close()


class Chat:
    """`tether chat --json`, driven through stdin; every stdout line is an event."""

    def __init__(self, binary: str, url: str, peer_id: str, to: str, room: str, secret: str,
                 logdir: Path) -> None:
        self.binary, self.url, self.peer_id, self.to, self.room = binary, url, peer_id, to, room
        self.secret, self.logdir = secret, logdir
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.events: list[dict] = []
        self.changed = asyncio.Event()
        self.t0 = time.monotonic()
        self._reader: Optional[asyncio.Task] = None
        self._stderr: Any = None
        self._stdout_log: Any = None

    async def start(self) -> None:
        self._stderr = open(self.logdir / f"chat-{self.peer_id}.stderr.log", "wb")
        self._stdout_log = open(self.logdir / f"chat-{self.peer_id}.events.jsonl", "w")
        env = dict(os.environ, TETHER_SECRET=self.secret)
        env.setdefault("RUST_LOG", "warn,tether=debug,tether_rtc=debug,tether_recovery=debug,"
                                   "tether_signal::client=error")
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "chat", "--signal", self.url, "--peer-id", self.peer_id, "--to", self.to,
            "--room", self.room, "--json", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=self._stderr, env=env)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line.decode("utf-8", "replace")}
            event["_t"] = round(time.monotonic() - self.t0, 3)
            self.events.append(event)
            self._stdout_log.write(json.dumps(event) + "\n")
            self._stdout_log.flush()
            self._wake()
        self.events.append({"event": "_exit", "_t": round(time.monotonic() - self.t0, 3)})
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def line(self, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode("utf-8") + b"\n")
        await self.proc.stdin.drain()

    # what the events say

    def received(self) -> list[str]:
        return [e["text"] for e in self.events if e.get("event") == "received"]

    def refused(self) -> list[dict]:
        return [e for e in self.events if e.get("event") == "sent" and not e.get("accepted")]

    @property
    def state(self) -> Optional[str]:
        for e in reversed(self.events):
            if e.get("event") == "state":
                return e.get("state")
        return None

    @property
    def peer_connected(self) -> bool:
        for e in reversed(self.events):
            if e.get("event") == "peer":
                return bool(e.get("connected"))
        return False

    @property
    def exited(self) -> bool:
        return any(e.get("event") == "_exit" for e in self.events)

    def since(self, index: int, **match: Any) -> list[dict]:
        return [e for e in self.events[index:] if all(e.get(k) == v for k, v in match.items())]

    def tail(self, n: int = 40) -> str:
        return "\n".join(json.dumps(e) for e in self.events[-n:])

    async def wait(self, cond: Callable[[], Any], timeout: float, what: str) -> Any:
        def check() -> Any:
            if self.exited:
                raise WaitFailed(f"tether chat exited while waiting for {what}\n{self.tail()}")
            return cond()
        return await wait_until(check, timeout, what, lambda: [self.changed],
                                lambda: "last chat events:\n" + self.tail())

    async def command(self, name: str, timeout: float = 40) -> dict:
        """Types `/name` and waits for its `command` event."""
        index = len(self.events)
        await self.line(f"/{name}")
        found = await self.wait(lambda: self.since(index, event="command", command=name), timeout,
                                f"the chat's answer to /{name}")
        return found[0]

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.line("/quit")
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=5)
        self._stderr.close()
        self._stdout_log.close()


class Traffic:
    """Numbered messages both ways: `n2p-NNNNN` typed into the chat,
    `p2n-NNNNN` sent by the Python peer, one each way every `interval` s."""

    def __init__(self, chat: Chat, peer: TetherPeer, node_id: str, interval: float = 0.05) -> None:
        self.chat, self.peer, self.node_id, self.interval = chat, peer, node_id, interval
        self.n2p: list[str] = []
        self.p2n: list[str] = []
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._pump_chat()), asyncio.create_task(self._pump_peer())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def send_chat(self) -> None:
        text = f"n2p-{len(self.n2p):05d}"
        self.n2p.append(text)
        await self.chat.line(text)

    async def send_peer(self) -> None:
        text = f"p2n-{len(self.p2n):05d}"
        self.p2n.append(text)
        await self.peer.send(self.node_id, text)

    async def _pump_chat(self) -> None:
        while True:
            await self.send_chat()
            await asyncio.sleep(self.interval)  # pacing the load, not synchronisation

    async def _pump_peer(self) -> None:
        while True:
            await self.send_peer()
            await asyncio.sleep(self.interval)

    def py_received(self) -> list[str]:
        return self.peer.received.get(self.node_id, [])

    def mark(self) -> tuple[int, int]:
        return len(self.n2p), len(self.p2n)

    def flowed_since(self, mark: tuple[int, int], n: int = 5) -> bool:
        """At least `n` messages sent after `mark` arrived, each way."""
        return len(self.py_received()) >= mark[0] + n and len(self.chat.received()) >= mark[1] + n

    def status(self) -> str:
        return (f"node->py: sent {len(self.n2p)}, delivered {len(self.py_received())}; "
                f"py->node: sent {len(self.p2n)}, delivered {len(self.chat.received())}; "
                f"chat state {self.chat.state}, peer connected {self.chat.peer_connected}")

    async def wait_flowing(self, mark: tuple[int, int], timeout: float, what: str, n: int = 5) -> None:
        await wait_until(lambda: self.flowed_since(mark, n), timeout, what,
                         lambda: [self.chat.changed, self.peer.changed], self.status)

    async def wait_all_delivered(self, timeout: float) -> None:
        await wait_until(
            lambda: len(self.py_received()) >= len(self.n2p) and len(self.chat.received()) >= len(self.p2n),
            timeout, "every message sent to be delivered, both ways",
            lambda: [self.chat.changed, self.peer.changed], self.status)


async def bounded(step: Awaitable[None], what: str, timeout: float, logdir: Path) -> None:
    """Runs one teardown step for at most `timeout` s. When it hangs, the
    stacks of every task go to logdir/hang.txt and the test fails (a hang is
    a finding, not something to wait out)."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        task.result()
        return
    with open(logdir / "hang.txt", "a") as out:
        out.write(f"teardown step hung: {what}\n")
        for other in asyncio.all_tasks():
            out.write(f"--- {other!r}\n")
            other.print_stack(file=out)
    raise AssertionError(f"teardown step hung for {timeout:.0f} s: {what} (stacks in {logdir}/hang.txt)")


def exactly_once_in_order(sent: list[str], delivered: list[str], direction: str) -> None:
    if delivered == sent:
        return
    seen: dict[str, int] = {}
    for text in delivered:
        seen[text] = seen.get(text, 0) + 1
    duplicates = sorted(t for t, n in seen.items() if n > 1)
    missing = [t for t in sent if t not in seen]
    unexpected = sorted(t for t in seen if t not in set(sent))
    order = [t for t in delivered if t in set(sent)]
    reordered = [a for a, b in zip(order, order[1:]) if a > b][:10]
    raise AssertionError(
        f"{direction}: {len(sent)} sent, {len(delivered)} delivered; "
        f"missing {missing[:20]} ({len(missing)}), duplicated {duplicates[:20]} ({len(duplicates)}), "
        f"unexpected {unexpected[:20]}, out of order after {reordered}")


def new_secret() -> str:
    return secrets.token_hex(24)


def token_for(secret: str, peer_id: str) -> str:
    return mint_token(secret.encode("utf-8"), peer_id)
