"""A TCP proxy that adds network latency: one process, several routes, loopback only.

Each route listens on a port and forwards to a target port, holding every chunk for half
the route's round-trip time in each direction, in order. A new connection also pays one
round trip for its handshake before its first byte moves on (the client's connect()
succeeds at once on loopback, so the proxy holds its data instead), which is what
`preconnect` saves. TLS is not modelled (the local stack is plain HTTP; it would add
one more round trip per new connection).

Every request line (plain HTTP/1.1) and the first byte of each answer is logged as one
JSON line on stdout, so the bench can tell which requests were on a call's critical path,
how many round trips and handshakes they paid, and how long the server took:

    {"route": "api", "ev": "accept", "conn": 3, "t": 1764000000.123}
    {"route": "api", "ev": "req", "conn": 3, "t": ..., "fwd": ..., "line": "POST /api/... HTTP/1.1"}
    {"route": "api", "ev": "resp", "conn": 3, "t": ..., "out": ...}

    python -m bench.delay_proxy --route api:9001:8000:40 --route sig:9002:8790:40
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import sys
import time

REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/1\.[01]\r\n")
_ids = itertools.count(1)


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def pump(queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
    """Write each chunk at its due time; None closes the write side."""
    loop = asyncio.get_running_loop()
    while True:
        due, data = await queue.get()
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if data is None:
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()
            return
        writer.write(data)
        with contextlib.suppress(OSError):
            await writer.drain()


class Route:
    def __init__(self, name: str, listen: int, target: int, rtt_ms: float):
        self.name, self.listen, self.target = name, listen, target
        self.half = rtt_ms / 2000
        self.rtt = rtt_ms / 1000

    async def handle(self, creader, cwriter) -> None:
        loop = asyncio.get_running_loop()
        conn = next(_ids)
        accepted = loop.time()
        # The handshake: the client's first byte could leave only one round trip from now.
        ready = accepted + self.rtt
        emit({"route": self.name, "ev": "accept", "conn": conn, "t": time.time()})
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            cwriter.close()
            return
        up, down = asyncio.Queue(), asyncio.Queue()
        pumps = [
            asyncio.create_task(pump(up, swriter)),
            asyncio.create_task(pump(down, cwriter)),
        ]
        # Whose turn it is: the first chunk after the other side spoke starts a request or
        # an answer (HTTP/1.1 without pipelining, as browsers send it).
        turn = {"up": False, "down": False}

        async def client_to_server() -> None:
            last = 0.0
            while data := await creader.read(65536):
                now = loop.time()
                due = max(max(now, ready) + self.half, last)
                last = due
                if not turn["up"] and REQUEST_LINE.match(data):
                    line = data.split(b"\r\n", 1)[0].decode("latin-1")
                    wall = time.time()
                    emit({"route": self.name, "ev": "req", "conn": conn, "t": wall,
                          "fwd": wall + (due - now), "line": line})  # fmt: skip
                turn["up"], turn["down"] = True, False
                up.put_nowait((due, data))
            up.put_nowait((max(loop.time() + self.half, last), None))

        async def server_to_client() -> None:
            last = 0.0
            while data := await sreader.read(65536):
                now = loop.time()
                due = max(now + self.half, last)
                last = due
                if not turn["down"]:
                    wall = time.time()
                    emit({"route": self.name, "ev": "resp", "conn": conn, "t": wall,
                          "out": wall + (due - now)})  # fmt: skip
                turn["up"], turn["down"] = False, True
                down.put_nowait((due, data))
            down.put_nowait((max(loop.time() + self.half, last), None))

        try:
            await asyncio.gather(client_to_server(), server_to_client(), *pumps)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for task in pumps:
                task.cancel()
            for writer in (cwriter, swriter):
                with contextlib.suppress(OSError):
                    writer.close()
            emit({"route": self.name, "ev": "close", "conn": conn, "t": time.time()})


def parse_route(text: str) -> Route:
    name, listen, target, rtt = text.split(":")
    return Route(name, int(listen), int(target), float(rtt))


async def serve(routes: list[Route]) -> None:
    servers = [
        await asyncio.start_server(route.handle, "127.0.0.1", route.listen, backlog=512)
        for route in routes
    ]
    for route in routes:
        emit(
            {"route": route.name, "ev": "listen", "port": route.listen, "rtt_ms": route.rtt * 1000}
        )
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser(description="Latency-adding TCP proxy for the bench.")
    parser.add_argument(
        "--route", action="append", required=True, metavar="NAME:LISTEN:TARGET:RTT_MS"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve([parse_route(r) for r in args.route]))


if __name__ == "__main__":
    main()
