from csp.decorators import csp_update
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.routers import SimpleRouter

from tests_app.api.discovery_views import UploadDownloadView
from tests_app.api.errors import not_found_view
from tests_app.api.judge_views import JudgeViewSet
from tests_app.api.schema import RedocView, SchemaView, SwaggerView, redoc_bundle
from tests_app.api.views import BenchmarkViewSet, TestViewSet

router = SimpleRouter(trailing_slash=False)
router.register("v5/artifacts/test", TestViewSet, basename="test")
router.register("v5/artifacts/benchmark", BenchmarkViewSet, basename="benchmark")
router.register("v5/artifacts/judge", JudgeViewSet, basename="judge")

urlpatterns = [
    path("", include(router.urls)),
    path(
        "v5/uploads/<uuid:upload_id>/download",
        UploadDownloadView.as_view(),
        name="upload-download",
    ),
    # The schema and its two viewers, served offline from drf-spectacular-sidecar's static files.
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", SwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # Redoc styles itself with style elements that it writes at run time: its page alone allows
    # inline styles (never inline scripts); it shows nothing but the schema.
    path(
        "redoc/",
        csp_update({"style-src": ["'unsafe-inline'"]})(RedocView.as_view(url_name="schema")),
        name="redoc",
    ),
    path("redoc/redoc.standalone.js", redoc_bundle, name="redoc-bundle"),
    # Anything else under /api/ answers in the one error body, also with DEBUG on (where Django
    # would otherwise render its HTML technical 404 page instead of calling handler404).
    re_path(r"^.*$", csrf_exempt(not_found_view), name="api-not-found"),
]
