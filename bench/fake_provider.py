"""A fake Postmark that answers at once: ``python -m bench.fake_provider --port N``.

A raw asyncio HTTP/1.1 server (keep-alive, Content-Length bodies only: what
httpx sends), so that it costs as little CPU as possible next to the service
it serves. ``POST /email/batch`` answers one Postmark result per message;
with ``--mode down`` every batch gets a 503 (Postmark's maintenance code).
``GET /stats`` tells how many batches and messages arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from dataclasses import dataclass

import orjson

_MAX_HEADER_BYTES = 64 * 1024
_BATCH_PATH = b"/email/batch"
_STATS_PATH = b"/stats"
_DOWN_BODY = orjson.dumps({"ErrorCode": 100, "Message": "Maintenance (benchmark)"})


@dataclass(slots=True)
class _Stats:
    batches: int = 0
    accepted: int = 0
    refused: int = 0


def _response(status: int, reason: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        reason,
        len(body),
        body,
    )


class FakePostmark:
    def __init__(self, mode: str) -> None:
        self._down = mode == "down"
        self.stats = _Stats()

    def _batch(self, body: bytes) -> bytes:
        messages = orjson.loads(body)
        self.stats.batches += 1
        if self._down:
            self.stats.refused += len(messages)
            return _response(503, b"Service Unavailable", _DOWN_BODY)
        first = self.stats.accepted
        self.stats.accepted += len(messages)
        results = [
            {
                "ErrorCode": 0,
                "Message": "OK",
                "MessageID": f"bench-{first + index}",
                "To": message.get("To"),
            }
            for index, message in enumerate(messages)
        ]
        return _response(200, b"OK", orjson.dumps(results))

    def _answer(self, method: bytes, path: bytes, body: bytes) -> bytes:
        if method == b"POST" and path == _BATCH_PATH:
            return self._batch(body)
        if method == b"GET" and path == _STATS_PATH:
            stats = {
                "batches": self.stats.batches,
                "accepted": self.stats.accepted,
                "refused": self.stats.refused,
            }
            return _response(200, b"OK", orjson.dumps(stats))
        return _response(404, b"Not Found", b'{"ErrorCode": 404, "Message": "not found"}')

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > _MAX_HEADER_BYTES:
                    break
                request_line, *header_lines = head[:-4].split(b"\r\n")
                method, path, _version = request_line.split(b" ", 2)
                length = 0
                close = False
                for line in header_lines:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                body = await reader.readexactly(length) if length else b""
                writer.write(self._answer(method, path, body))
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def serve(port: int, mode: str) -> None:
    provider = FakePostmark(mode)
    server = await asyncio.start_server(
        provider.serve_connection, "127.0.0.1", port, limit=_MAX_HEADER_BYTES, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_provider", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["ok", "down"], default="ok")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.mode))


if __name__ == "__main__":
    main()
