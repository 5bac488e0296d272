"""Small HTTP and process helpers for the deployment tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from deploy.nginx.render import nginx_command, write_local
from devtools.ports import free_port, wait_for_port, wait_until  # noqa: F401 -- re-exported


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def header_all(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []

    def json(self):
        return json.loads(self.body)


def fetch(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict | None = None,
    body: bytes | str | None = None,
    source: str | None = None,
    timeout: float = 10,
) -> Reply:
    """One request with the path sent exactly as given, optionally from a chosen
    loopback source address (the whole 127/8 is local, so each is a distinct client).
    """
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


@dataclass
class RecordingUpstream:
    """A stand-in for gunicorn that records what nginx forwards."""

    port: int
    requests: list = field(default_factory=list)
    status: int = 200


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.record.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "forwarded_for": self.headers.get_all("X-Forwarded-For") or [],
                "body": body,
            }
        )
        payload = b'{"upstream":true}'
        self.send_response(self.server.record.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if "cors" in self.path:
            self.send_header("Access-Control-Allow-Origin", "https://client.example")
            self.send_header("Vary", "Origin")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_OPTIONS = _answer

    def log_message(self, *args):
        pass


@contextmanager
def recording_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    server.daemon_threads = True
    server.record = RecordingUpstream(port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.record
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Nginx:
    port: int
    prefix: Path
    conf: Path
    proc: subprocess.Popen

    @property
    def site(self) -> str:
        return (self.conf.parent / "site.conf").read_text()

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""


@contextmanager
def run_nginx(prefix: Path, *, upstream: str, dist_root: str | Path, **overrides):
    """Real nginx, unprivileged, foreground, on a free loopback port."""
    port = overrides.pop("port", None) or free_port()
    conf = write_local(prefix, port=port, upstream=upstream, dist_root=str(dist_root), **overrides)
    log = open(prefix / "stdout.log", "wb")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(nginx_command(prefix, conf), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=10, process=proc)
        yield Nginx(port=port, prefix=prefix, conf=conf, proc=proc)
    finally:
        stop_process(proc)
        log.close()


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
