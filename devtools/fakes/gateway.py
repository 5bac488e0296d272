"""Fake Retell v3 WebRTC gateway: real WebRTC (aiortc) behind WHIP-style signalling.

Serves under any base, e.g. ``RETELL_GATEWAY_BASE/{call_id}`` (whose last segment must
then be the POSTed call_id), or with no prefix at all:
  POST   {base}/v1/webrtc/sessions          {call_id, identity, sdp} -> {session_id, sdp}
  PATCH  {base}/v1/webrtc/sessions/{id}     {candidate}              (trickle ICE)
  DELETE {base}/v1/webrtc/sessions/{id}                              (hang up)

HTTP runs in a stdlib threaded server; aiortc runs on its own asyncio loop in a
background thread, so synchronous pytest fixtures can start and stop it.
Run standalone: ``python -m devtools.fakes.gateway --port 8790``.

With ``retell_url`` (--retell-url) set to a fake Retell API (devtools.fakes.retell), the
gateway tells it how each call went, as Retell's own backend would: when a session's peer
connection first connects, ``POST {retell_url}/_fake/calls/{call_id}/start``; when the
session ends (the widget's DELETE, the peer connection closing or failing, drop()),
``POST {retell_url}/_fake/calls/{call_id}/end`` ``{duration_ms, joined}`` with the length
measured from connected to ended (joined false, 0 ms, when it never connected). Once per
session, best effort, from a short-lived thread; sessions closed by reset()/stop() are
not reported.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from array import array
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
# 400 Hz divides 960 samples into whole periods, so one chunk loops seamlessly.
_TONE = array(
    "h",
    (int(8000 * math.sin(2 * math.pi * 400 * i / SAMPLE_RATE)) for i in range(FRAME_SAMPLES)),
).tobytes()

_PATH = re.compile(r"^(?P<prefix>/.*?)?/v1/webrtc/sessions(?:/(?P<sid>[^/]+))?/?$")


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    # aioice skips 127.0.0.1; a loopback-only fake must offer exactly that.
    return ["127.0.0.1"] if use_ipv4 else []


aioice.ice.get_host_addresses = _loopback_only
# aioice logs every connectivity check at INFO; keep test and `make run` output readable.
logging.getLogger("aioice").setLevel(logging.WARNING)


class ToneTrack(MediaStreamTrack):
    """A steady 400 Hz tone, paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(_TONE)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += FRAME_SAMPLES
        return frame


def _peak(frame: AudioFrame) -> int:
    samples = array("h")
    samples.frombytes(bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)])
    return max((abs(s) for s in samples), default=0)


@dataclass
class Session:
    session_id: str
    call_id: str | None
    identity: str | None
    token: str
    offer_sdp: str
    pc: RTCPeerConnection
    control: Any = None
    candidates: list[dict] = field(default_factory=list)
    # (monotonic time, peak amplitude) per received uplink frame.
    uplink: list[tuple[float, int]] = field(default_factory=list)
    control_messages: list[str] = field(default_factory=list)
    deleted: bool = False
    closed: bool = False
    connected_at: float | None = None  # monotonic time the peer connection first connected
    ended_at: float | None = None
    reported: bool = False  # the end was reported to retell_url (or must not be)

    def uplink_peak_since(self, since: float) -> int:
        return max((p for t, p in list(self.uplink) if t >= since), default=0)

    def uplink_frames_since(self, since: float) -> int:
        return sum(1 for t, _ in list(self.uplink) if t >= since)


class FakeGateway:
    """Start with ``start()``; ``url`` is then the base to hand out as the gateway URL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, audio: str = "tone") -> None:
        self.host = host
        self.port = port
        self.audio = audio  # "tone" or "echo"
        self.tokens: set[str] | None = None  # None: any non-empty Bearer token
        self.refuse_status: int | None = None  # answer every POST with this status
        self.not_ready: int = 0  # answer this many POSTs with 404 first
        self.blackhole_ice = False  # answer with unreachable candidates, ignore trickle
        self.allowed_origin: str | None = None  # None: echo the request's Origin
        self.retell_url: str | None = None  # a fake Retell API to tell when calls start/end
        self.reports: list[dict] = []  # what was sent there: {action, call_id, body, status}
        self.requests: list[dict] = []
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._relay = MediaRelay()

    # -- lifecycle ---------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeGateway:
        self._loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        loop_thread.start()
        self._httpd = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        http_thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        http_thread.start()
        self._threads = [loop_thread, http_thread]
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._loop:
            self._run(self._shutdown(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        for thread in self._threads:
            thread.join(timeout=5)
        if self._loop:
            self._loop.close()

    def reset(self) -> None:
        """Forget calls and switches between tests."""
        if self._loop:
            self._run(self._close_all(), timeout=5)
        self.tokens = None
        self.refuse_status = None
        self.not_ready = 0
        self.blackhole_ice = False
        self.audio = "tone"
        with self._lock:
            self.requests.clear()
            self.sessions.clear()
            self.reports.clear()

    # -- switches used by tests --------------------------------------------
    def drop(self, mode: str = "close", session_id: str | None = None) -> None:
        """End a live call: "control" sends status ended, "close" closes, "both" does both."""
        session = self._session(session_id)
        self._run(self._drop(session, mode), timeout=5)

    def requests_for(self, method: str) -> list[dict]:
        return [r for r in list(self.requests) if r["method"] == method]

    def last_session(self) -> Session | None:
        return self._session(None) if self.sessions else None

    # -- internals ---------------------------------------------------------
    def _session(self, session_id: str | None) -> Session:
        with self._lock:
            if session_id is None:
                return list(self.sessions.values())[-1]
            return self.sessions[session_id]

    def _run(self, coro, timeout: float = 10):
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _close_all(self) -> None:
        for session in list(self.sessions.values()):
            session.closed = True
            session.reported = True  # reset()/stop() are not hang-ups
            await session.pc.close()

    # -- telling the fake Retell API -----------------------------------------
    def _session_ended(self, session: Session) -> None:
        """Report the end once per session (from the loop or an HTTP thread)."""
        with self._lock:
            if session.reported:
                return
            session.reported = True
            session.ended_at = session.ended_at or time.monotonic()
        if not (self.retell_url and session.call_id):
            return
        joined = session.connected_at is not None
        duration = int((session.ended_at - session.connected_at) * 1000) if joined else 0
        self._report("end", session.call_id, {"duration_ms": duration, "joined": joined})

    def _report(self, action: str, call_id: str, body: dict) -> None:
        """POST {retell_url}/_fake/calls/{call_id}/{action} in a thread: never blocks."""
        url = f"{self.retell_url.rstrip('/')}/_fake/calls/{call_id}/{action}"
        record = {"action": action, "call_id": call_id, "body": body, "status": None}
        with self._lock:
            self.reports.append(record)

        def send() -> None:
            request = urllib.request.Request(  # noqa: S310 -- a loopback fake's URL
                url,
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                    record["status"] = answer.status
            except urllib.error.HTTPError as exc:
                record["status"] = exc.code
                exc.close()
            except OSError as exc:
                record["status"] = f"{type(exc).__name__}: {exc}"

        threading.Thread(target=send, daemon=True).start()

    async def _shutdown(self) -> None:
        # Cancel what is left (recorders, relays) so nothing runs on a closed loop.
        await self._close_all()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drop(self, session: Session, mode: str) -> None:
        # Act on an established call: wait for the browser's control channel to open.
        for _ in range(100):
            if session.control is not None and session.control.readyState == "open":
                break
            await asyncio.sleep(0.05)
        if mode in ("control", "both") and session.control is not None:
            session.control.send(json.dumps({"type": "status", "state": "ended"}))
            await asyncio.sleep(0.2)  # let the message leave before any close
        if mode in ("close", "both"):
            session.closed = True
            await session.pc.close()
        self._session_ended(session)

    async def _answer(self, body: dict, token: str) -> Session:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session = Session(
            session_id=uuid.uuid4().hex,
            call_id=body.get("call_id"),
            identity=body.get("identity"),
            token=token,
            offer_sdp=body["sdp"],
            pc=pc,
        )

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            if channel.label == "control":
                session.control = channel

                @channel.on("message")
                def on_message(message) -> None:
                    session.control_messages.append(message)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and session.connected_at is None:
                session.connected_at = time.monotonic()
                if self.retell_url and session.call_id and not session.reported:
                    self._report("start", session.call_id, {})
            elif pc.connectionState in ("failed", "closed"):
                self._session_ended(session)

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind != "audio":
                return
            pc.addTrack(self._relay.subscribe(track) if self.audio == "echo" else ToneTrack())
            asyncio.ensure_future(self._record(session, self._relay.subscribe(track)))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return session

    async def _record(self, session: Session, track) -> None:
        while not session.closed:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            session.uplink.append((time.monotonic(), _peak(frame)))

    async def _add_candidate(self, session: Session, candidate: dict | None) -> None:
        if not candidate or not candidate.get("candidate"):
            await session.pc.addIceCandidate(None)
            return
        parsed = candidate_from_sdp(candidate["candidate"].split(":", 1)[1])
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await session.pc.addIceCandidate(parsed)

    async def _delete(self, session: Session) -> None:
        session.deleted = True
        session.closed = True
        session.ended_at = time.monotonic()
        self._session_ended(session)
        await session.pc.close()

    # Called from HTTP threads; returns (status, json body or None).
    def handle(self, method: str, path: str, token: str | None, body: Any) -> tuple[int, Any]:
        match = _PATH.match(path)
        self.requests.append(
            {"method": method, "path": path, "token": token, "body": body, "at": time.monotonic()}
        )
        if not match:
            return 404, {"error": "not_found"}
        if not token or (self.tokens is not None and token not in self.tokens):
            return 401, {"error": "unauthorized"}
        sid = match.group("sid")
        if method == "POST" and sid is None:
            if self.refuse_status:
                return self.refuse_status, {"error": "refused"}
            if self.not_ready > 0:
                self.not_ready -= 1
                return 404, {"error": "room_not_ready"}
            if not isinstance(body, dict) or not isinstance(body.get("sdp"), str):
                return 400, {"error": "sdp required"}
            # Behind RETELL_GATEWAY_BASE/<call_id> (or a `url` ending in it) the call in the
            # path must be the call being joined; a mismatch is a client bug, not "not ready".
            prefix = (match.group("prefix") or "").rstrip("/")
            if prefix and prefix.rsplit("/", 1)[-1] != body.get("call_id"):
                return 400, {"error": "call_id does not match the URL"}
            session = self._run(self._answer(body, token))
            with self._lock:
                self.sessions[session.session_id] = session
            sdp = session.pc.localDescription.sdp
            if self.blackhole_ice:  # port 9 (discard): connectivity checks can never succeed
                sdp = re.sub(r"(a=candidate:\S+ \d+ \S+ \d+ \S+ )\d+", r"\g<1>9", sdp)
            return 200, {"session_id": session.session_id, "sdp": sdp}
        with self._lock:
            session = self.sessions.get(sid or "")
        if session is None or session.token != token:
            return 404, {"error": "no such session"}
        if method == "PATCH":
            candidate = body.get("candidate") if isinstance(body, dict) else None
            session.candidates.append(candidate)
            if not self.blackhole_ice:
                self._run(self._add_candidate(session, candidate))
            return 204, None
        if method == "DELETE":
            self._run(self._delete(session))
            return 204, None
        return 405, {"error": "method not allowed"}


def _handler_for(gateway: FakeGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _cors(self) -> None:
            origin = gateway.allowed_origin or self.headers.get("Origin")
            if origin:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Vary", "Origin")

        def _reply(self, status: int, body: Any) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self._cors()
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:  # noqa: N802
            self.send_response(204)
            self._cors()
            self.send_header("Access-Control-Allow-Methods", "POST, PATCH, DELETE, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._reply(400, {"error": "invalid json"})
                return
            auth = self.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else None
            status, reply = gateway.handle(self.command, self.path.split("?")[0], token, body)
            self._reply(status, reply)

        do_POST = do_PATCH = do_DELETE = _dispatch  # noqa: N815

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--audio", choices=["tone", "echo"], default="echo")
    parser.add_argument(
        "--retell-url",
        metavar="URL",
        default=None,
        help="a fake Retell API (devtools.fakes.retell) to tell when each call starts/ends",
    )
    args = parser.parse_args(argv)
    gateway = FakeGateway(args.host, args.port, audio=args.audio)
    gateway.retell_url = args.retell_url
    gateway.start()
    print(f"fake Retell gateway on {gateway.url} (audio: {args.audio})", flush=True)
    if args.retell_url:
        print(f"fake Retell gateway reports call ends to {args.retell_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        gateway.stop()


if __name__ == "__main__":
    main()
