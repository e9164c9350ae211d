from django.urls import URLPattern, path

from tests_app.realtime.consumers import TestEventsConsumer

# A str converter rather than uuid: a malformed id must close with 4404 like an unknown one,
# not fail the routing (which would drop the connection without a close code).
websocket_urlpatterns: list[URLPattern] = [
    path("ws/tests/<str:test_id>/", TestEventsConsumer.as_asgi(), name="test-events"),
]
