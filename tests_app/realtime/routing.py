from django.urls import URLPattern

# Filled in by the realtime consumer (ws/tests/<test_id>/).
websocket_urlpatterns: list[URLPattern] = []
