"""``replaybench-mcp``: the MCP server for clients that speak only stdio (desktop apps).

It forwards every tool listing and call to a replaybench server's ``/mcp`` with an API key,
``REPLAYBENCH_URL`` (default http://127.0.0.1:8000) and ``REPLAYBENCH_API_KEY``, so the tools,
their scope and their errors are the server's. It needs no Django: only the ``mcp`` package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp.client import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

from tests_app.mcp.instructions import INSTRUCTIONS

URL_VARIABLE = "REPLAYBENCH_URL"
KEY_VARIABLE = "REPLAYBENCH_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
# wait_for_invocation holds a call while a replay runs; leave it room.
READ_TIMEOUT_S = 120


def remote_url() -> str:
    return (os.environ.get(URL_VARIABLE, "").strip() or DEFAULT_URL).rstrip("/") + "/mcp"


def remote_key() -> str:
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not key:
        sys.stderr.write(f"replaybench-mcp: set {KEY_VARIABLE} to an API key\n")
        raise SystemExit(2)
    return key


@asynccontextmanager
async def _remote(server: Server[Any]) -> AsyncIterator[dict[str, ClientSession]]:
    """One session with the remote server for as long as the stdio client is connected."""
    headers = {"X-Api-Key": remote_key(), "User-Agent": "replaybench-mcp"}
    timeout = httpx2.Timeout(30, read=READ_TIMEOUT_S)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http_client,
        streamable_http_client(remote_url(), http_client=http_client) as streams,
        ClientSession(*streams) as session,
    ):
        await session.initialize()
        yield {"remote": session}


async def _list_tools(
    ctx: ServerRequestContext[dict[str, ClientSession], Any],
    params: types.PaginatedRequestParams | None,
) -> types.ListToolsResult:
    return await ctx.lifespan_context["remote"].list_tools(params=params)


async def _call_tool(
    ctx: ServerRequestContext[dict[str, ClientSession], Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    result = await ctx.lifespan_context["remote"].call_tool(params.name, params.arguments)
    if not isinstance(result, types.CallToolResult):
        raise TypeError(f"The server answered {params.name} with {type(result).__name__}")
    return result


def build_bridge() -> Server[dict[str, ClientSession]]:
    return Server(
        "replaybench",
        version="1",
        title="replaybench",
        instructions=INSTRUCTIONS,
        lifespan=_remote,
        on_list_tools=_list_tools,
        on_call_tool=_call_tool,
    )


async def serve() -> None:
    bridge = build_bridge()
    async with stdio_server() as (read_stream, write_stream):
        await bridge.run(read_stream, write_stream, bridge.create_initialization_options())


def main() -> None:
    remote_key()  # a missing key is said at once, not at the client's first message
    anyio.run(serve)


if __name__ == "__main__":
    main()
