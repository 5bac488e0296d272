"""A fast fake Retell for the benchmark: raw HTTP/1.1 keep-alive on asyncio.

Answers POST /v3/create-web-call (and /v2/) exactly like devtools/fakes/retell.py in its
"ok" behaviour (201, the v3 JSON shape, Bearer auth, agent_id checked), after a delay D
scheduled with loop.call_later, so one process can hold thousands of waiting calls while
spending almost no CPU. Why not the stdlib fake: ThreadingHTTPServer starts a thread per
connection and parses headers in Python under the GIL; bench/run.py measures both directly
and records the numbers.

Control (loopback only, used by the harness between cells):
    PUT /_bench/delay/<ms>   set D for the following requests
    GET /_bench/stats        {"creates": N, "delay_ms": D}

    python -m bench.fake_retell --port 9000 --delay 0.15 --api-key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json

from devtools.fakes.retell import DEFAULT_KEY, created_answer

MAX_HEADER = 16 * 1024
MAX_BODY = 64 * 1024
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


class State:
    def __init__(self, api_key: str, delay: float):
        self.auth = f"Bearer {api_key}".encode()
        self.delay = delay
        self.creates = 0


def response(status: int, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Server: BenchFakeRetell/1\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def error(status: int, message: str) -> bytes:
    return response(status, json.dumps({"status": "error", "message": message}).encode())


class FakeRetellProtocol(asyncio.Protocol):
    """One connection; requests are answered strictly in order (no pipelining overlap)."""

    def __init__(self, state: State):
        self.state = state
        self.buffer = bytearray()
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER and self.transport:
                self.transport.close()
            return
        head = bytes(self.buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        try:
            method, path, _ = lines[0].split(" ", 2)
        except ValueError:
            self.close()
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY:
            self.close()
            return
        if len(self.buffer) < end + 4 + length:
            return  # wait for the rest of the body
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.busy = True
        answer, delayed = self.answer(method, path, headers, body)
        if delayed and self.state.delay > 0:
            asyncio.get_running_loop().call_later(self.state.delay, self.send, answer)
        else:
            self.send(answer)

    def answer(self, method: str, path: str, headers: dict, body: bytes) -> tuple[bytes, bool]:
        state = self.state
        if path.startswith("/_bench/"):
            if method == "PUT" and path.startswith("/_bench/delay/"):
                state.delay = int(path.rsplit("/", 1)[1]) / 1000
            stats = {"creates": state.creates, "delay_ms": round(state.delay * 1000)}
            return response(200, json.dumps(stats).encode()), False
        if method != "POST" or path not in ("/v2/create-web-call", "/v3/create-web-call"):
            return error(404, "Not found"), True
        if headers.get("authorization", "").encode() != state.auth:
            return error(401, "Invalid API key"), True
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("agent_id"), str):
            return error(400, "Invalid request body"), True
        state.creates += 1
        answer = created_answer(path.split("/")[1], data, {}, None)
        return response(201, json.dumps(answer).encode()), True

    def send(self, answer: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(answer)
        self.busy = False
        if self.buffer:
            self.next_request()

    def close(self) -> None:
        if self.transport:
            self.transport.close()


async def serve(host: str, port: int, state: State) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FakeRetellProtocol(state), host, port, backlog=4096, reuse_address=True
    )
    print(f"bench fake Retell listening on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fast fake Retell for the benchmark.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, State(args.api_key, args.delay)))


if __name__ == "__main__":
    main()
