"""Fake Retell call monitor socket: a real WebSocket server on loopback.

Speaks what app/retell/monitor.py expects of Retell (docs/retell.md, Live transcript):
    GET {url}/v2/monitor-call/{call_id}, subprotocols ["bearer", <API key>] (echoes "bearer";
        401 with a missing or wrong key)
    -> {type: "transcript_snapshot", transcripts: [{id, time_sec, role, content}, ...]} on
       connect, then {type: "transcript_updated", transcripts: [the changed items]} as items
       grow word by word or are replaced by id;
    -> close 4004 while the call is not live (not_live(call_id, n): the next n connections);
    -> {type: "call_ended", disconnection_reason} then close 1000 "call_ended" on end().

Tests script a call in Python (say, replace, end, not_live) and read connection counts per
call (connections, open_now, max_open) to assert one upstream socket per call. Over HTTP,
for `make run`: GET {url}/_fake/calls/{call_id}/say?role=agent&text=... and .../end.
With demo=True (--demo) a call nobody scripted plays a short conversation on first connect.
Run standalone: ``python -m devtools.fakes.monitor --port 8791 --api-key KEY --demo``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

_CALL = re.compile(r"^/v2/monitor-call/(?P<call_id>[A-Za-z0-9_-]{1,128})$")
_CONTROL = re.compile(r"^/_fake/calls/(?P<call_id>[A-Za-z0-9_-]{1,128})/(?P<action>say|end)$")
DEMO_SCRIPT = (
    ("agent", "Hello! Thanks for calling the demo agent. How can I help you today?"),
    ("user", "I would like to know your opening hours."),
    ("agent", "We are open every day from nine in the morning to six in the evening."),
)


@dataclass
class FakeCall:
    call_id: str
    started: float = field(default_factory=time.monotonic)
    items: dict[str, dict] = field(default_factory=dict)  # id -> {id, time_sec, role, content}
    changes: list[tuple[int, str]] = field(default_factory=list)  # (version, item id)
    version: int = 0
    ended: str | None = None
    not_live: int = 0  # connections still to refuse with 4004
    connections: int = 0  # handshakes accepted, 4004s included
    open_now: int = 0  # sockets serving the transcript now
    max_open: int = 0
    scripted: bool = False


class FakeMonitor:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None):
        self.host, self.port = host, port
        self.api_key = api_key  # None: any non-empty key
        self.demo = False
        self.word_delay = 0.15  # the demo's and say()'s default pace
        self.calls: dict[str, FakeCall] = {}
        self.keys_seen: list[str] = []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> FakeMonitor:
        self._server = serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=["bearer"],
            process_request=self._process_request,
            compression=None,
        )
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self.end_all()
            self._server.shutdown()
        if self._thread:
            self._thread.join(timeout=5)

    def reset(self) -> None:
        """Ends every call (open sockets see call_ended) and forgets them."""
        self.end_all()
        with self._cond:
            self.calls.clear()
            self.keys_seen.clear()
        self.demo = False

    # -- scripting -----------------------------------------------------------------
    def call(self, call_id: str) -> FakeCall:
        with self._cond:
            return self.calls.setdefault(call_id, FakeCall(call_id))

    def not_live(self, call_id: str, connections: int) -> None:
        self.call(call_id).not_live = connections

    def say(
        self, call_id: str, role: str, text: str, word_delay: float | None = None, wait=True
    ) -> str:
        """A new item that grows word by word (one transcript_updated per word); returns its
        id. wait=False returns at once and lets it grow in a thread."""
        call = self.call(call_id)
        call.scripted = True
        item_id = str(next(self._ids))
        delay = self.word_delay if word_delay is None else word_delay
        words = text.split()
        at = round(time.monotonic() - call.started, 3)

        def grow() -> None:
            for count in range(1, len(words) + 1):
                if call.ended:
                    return
                self._put(call, item_id, role, " ".join(words[:count]), at)
                if count < len(words):
                    time.sleep(delay)

        if wait:
            grow()
        else:
            threading.Thread(target=grow, daemon=True).start()
        return item_id

    def replace(self, call_id: str, item_id: str, content: str) -> None:
        call = self.call(call_id)
        old = call.items[item_id]
        self._put(call, item_id, old["role"], content, old["time_sec"])

    def end(self, call_id: str, reason: str = "user_hangup") -> None:
        call = self.call(call_id)
        with self._cond:
            call.ended = call.ended or reason
            self._cond.notify_all()

    def end_all(self) -> None:
        for call_id in list(self.calls):
            self.end(call_id, "reset")

    def wait_open(self, call_id: str, count: int, timeout: float = 10) -> bool:
        """Blocks until exactly `count` sockets serve the call (0: all closed)."""
        call = self.call(call_id)
        with self._cond:
            return self._cond.wait_for(lambda: call.open_now == count, timeout)

    def _put(self, call: FakeCall, item_id: str, role: str, content: str, at: float) -> None:
        with self._cond:
            call.items[item_id] = {"id": item_id, "time_sec": at, "role": role, "content": content}
            call.version += 1
            call.changes.append((call.version, item_id))
            self._cond.notify_all()

    def _demo(self, call: FakeCall) -> None:
        for role, text in DEMO_SCRIPT:
            if call.ended:
                return
            self.say(call.call_id, role, text)
            time.sleep(1.0)

    # -- the server ----------------------------------------------------------------
    def _process_request(self, connection, request):
        path = urlsplit(request.path)
        control = _CONTROL.match(path.path)
        if control:
            return self._control(connection, control["call_id"], control["action"], path.query)
        if not _CALL.match(path.path):
            return connection.respond(404, "no such path\n")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        key = offered[1] if len(offered) == 2 and offered[0] == "bearer" else ""
        self.keys_seen.append(key)
        if not key or (self.api_key is not None and key != self.api_key):
            return connection.respond(401, "unauthorized\n")
        return None

    def _control(self, connection, call_id: str, action: str, query: str):
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        if action == "end":
            self.end(call_id, args.get("reason", "user_hangup"))
        else:
            self.say(call_id, args.get("role", "agent"), args.get("text", "Hello"), wait=False)
        return connection.respond(200, "ok\n")

    def _handle(self, ws) -> None:
        call = self.call(_CALL.match(urlsplit(ws.request.path).path)["call_id"])
        with self._cond:
            call.connections += 1
            refuse = call.not_live > 0
            call.not_live -= 1 if refuse else 0
        if refuse:
            ws.close(4004, "call not live")
            return
        with self._cond:
            call.open_now += 1
            call.max_open = max(call.max_open, call.open_now)
            self._cond.notify_all()
            if self.demo and not call.scripted:
                call.scripted = True
                threading.Thread(target=self._demo, args=(call,), daemon=True).start()
        try:
            self._serve_call(ws, call)
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                call.open_now -= 1
                self._cond.notify_all()

    def _serve_call(self, ws, call: FakeCall) -> None:
        with self._cond:
            snapshot = sorted(call.items.values(), key=lambda i: i["time_sec"])
            seen = call.version
        ws.send(json.dumps({"type": "transcript_snapshot", "transcripts": snapshot}))
        while True:
            with self._cond:
                self._cond.wait_for(lambda s=seen: call.version > s or call.ended, timeout=0.2)
                changed = {i for v, i in call.changes if v > seen}
                updates = [dict(call.items[i]) for i in sorted(changed, key=int)]
                seen, ended = call.version, call.ended
            if updates:
                ws.send(json.dumps({"type": "transcript_updated", "transcripts": updates}))
            if ended:
                ws.send(json.dumps({"type": "call_ended", "disconnection_reason": ended}))
                ws.close(1000, "call_ended")
                return
            with contextlib.suppress(TimeoutError):  # raises ConnectionClosed once it left
                ws.recv(timeout=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--api-key", default=None, help="the key to accept (default: any)")
    parser.add_argument("--demo", action="store_true", help="play a short call on connect")
    args = parser.parse_args(argv)
    monitor = FakeMonitor(args.host, args.port, api_key=args.api_key)
    monitor.demo = args.demo
    monitor.start()
    print(f"fake Retell monitor socket on {monitor.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        monitor.stop()


if __name__ == "__main__":
    main()
