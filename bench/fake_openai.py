"""A loopback OpenAI-compatible chat completions server that answers every call after a delay.

``python -m bench.fake_openai --port 0 --delay-ms 50`` prints ``listening <port>`` and serves:

* ``POST /v1/chat/completions``: waits ``--delay-ms`` then answers one choice that echoes the last
  user message (so an auto-regressive replay has something of its own to carry forward);
* ``GET /stats``: ``{"calls", "max_in_flight"}``; ``POST /stats/reset`` zeroes them.

asyncio with keep-alive and no per-call thread, so hundreds of concurrent calls each take the
delay and nothing more: the server is never the bottleneck that the bench measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any


class Server:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        last_user = next(
            (m.get("content") for m in reversed(messages) if m.get("role") == "user"), ""
        )
        content = f"Echo: {str(last_user)[:200]}"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "bench"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": sum(len(str(m.get("content", ""))) // 4 for m in messages),
                "completion_tokens": len(content) // 4,
                "total_tokens": 0,
            },
        }

    async def respond(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay_s)
                return 200, self.completion(json.loads(body or b"{}"))
            finally:
                self.in_flight -= 1
        if path == "/stats" and method == "GET":
            return 200, {"calls": self.calls, "max_in_flight": self.max_in_flight}
        if path == "/stats/reset" and method == "POST":
            self.calls = 0
            self.max_in_flight = 0
            return 200, {"calls": 0}
        return 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                method, path, _ = request_line.decode("latin1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                status, payload = await self.respond(method, path.split("?", 1)[0], body)
                data = json.dumps(payload).encode()
                reason = "OK" if status == 200 else "Not Found"
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def serve(host: str, port: int, delay_s: float) -> None:
    server = Server(delay_s)
    listener = await asyncio.start_server(server.handle, host, port, backlog=1024)
    bound_port = listener.sockets[0].getsockname()[1]
    print(f"listening {bound_port}", flush=True)
    async with listener:
        await listener.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.host, arguments.port, arguments.delay_ms / 1000))


if __name__ == "__main__":
    main()
