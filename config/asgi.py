"""ASGI entry point: HTTP through Django, websockets through Channels, ``/mcp`` through the MCP
server (tests_app/mcp/asgi.py), which shares the API's keys and services.

Static files are served by the app itself (WhiteNoise, a middleware, so they carry the pages'
security headers; no CDN, no separate static server needed); a proxy in front may cache them.
"""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from config.access_log import AccessLog  # noqa: E402
from tests_app.background import sweep_in_this_process  # noqa: E402
from tests_app.mcp.asgi import McpApplication, is_mcp_path  # noqa: E402
from tests_app.realtime.middleware import websocket_stack  # noqa: E402
from tests_app.realtime.routing import websocket_urlpatterns  # noqa: E402
from tests_app.tasks import sweep_stranded_work  # noqa: E402

mcp_app = McpApplication()


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if is_mcp_path(scope["path"]):
        await mcp_app(scope, receive, send)
    else:
        await django_asgi_app(scope, receive, send)


# The access log is the app's, with credentials masked in query strings (config/access_log.py).
application = AccessLog(
    ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": websocket_stack(URLRouter(websocket_urlpatterns)),
        }
    )
)

if settings.BACKGROUND_BACKEND == "thread":
    sweep_in_this_process(sweep_stranded_work)  # no beat beside the embedded server
