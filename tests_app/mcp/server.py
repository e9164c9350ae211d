"""The MCP server: the tools of :mod:`tests_app.mcp.tools` on the SDK's low-level ``Server``.

The low-level server (rather than the decorator-based ``MCPServer``) lets each tool keep the REST
endpoint's schema and input serializer, and answer the REST error body as a tool error.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
import orjson
from asgiref.sync import sync_to_async
from drf_orjson_renderer.renderers import ORJSONRenderer
from mcp.server import Server, ServerRequestContext

from tests_app.actors import CLIENT_MCP, Actor
from tests_app.api.errors import error_body, exception_handler
from tests_app.mcp.instructions import INSTRUCTIONS
from tests_app.mcp.tools import TOOLS, TOOLS_BY_NAME, Tool

_RENDERER = ORJSONRenderer()


def _listing(tools: list[Tool]) -> list[types.Tool]:
    return [
        types.Tool(
            name=tool.name,
            title=tool.title,
            description=tool.description,
            input_schema=tool.input_schema(),
            annotations=types.ToolAnnotations(
                title=tool.title,
                read_only_hint=tool.read_only,
                open_world_hint=False,
            ),
        )
        for tool in tools
    ]


def _result(body: Any, *, is_error: bool = False) -> types.CallToolResult:
    # Rendered as the REST API renders (orjson, the same options): the same ids and timestamps.
    text = _RENDERER.render(body).decode()
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=orjson.loads(text),
        is_error=is_error,
    )


def _error(exc: Exception, tool: Tool) -> types.CallToolResult:
    # The API's one handler: domain errors, validation errors, outages (503) and anything
    # unexpected (logged, a 500 body) come out in the REST body.
    response = exception_handler(exc, {"view": tool})
    return _result(response.data, is_error=True)


async def _list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    # The first listing generates the OpenAPI schema, which takes a while: off the event loop.
    tools = await sync_to_async(_listing, thread_sensitive=False)(TOOLS)
    return types.ListToolsResult(tools=tools)


def caller(ctx: ServerRequestContext[Any, Any]) -> Actor:
    """The authenticated user that :mod:`tests_app.mcp.asgi` put on the HTTP request."""
    request = ctx.request
    user = getattr(getattr(request, "state", None), "user", None)
    if user is None:
        # Only reachable if the server is mounted without its authentication.
        raise RuntimeError("The MCP server was called without an authenticated user")
    return Actor(user=user, client=CLIENT_MCP)


async def _call_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    tool = TOOLS_BY_NAME.get(params.name)
    if tool is None:
        return _result(error_body(f"No tool named {params.name!r}.", "not_found"), is_error=True)
    actor = caller(ctx)
    try:
        data = tool.parse(dict(params.arguments or {}))
        answer = await tool.handler(actor, data)
    except Exception as exc:  # every error becomes the REST error body
        return _error(exc, tool)
    return _result(answer)


def build_server() -> Server[Any]:
    return Server(
        "replaybench",
        version="1",
        title="replaybench",
        instructions=INSTRUCTIONS,
        on_list_tools=_list_tools,
        on_call_tool=_call_tool,
    )
