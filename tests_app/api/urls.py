from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from tests_app.api.discovery_views import UploadDownloadView
from tests_app.api.views import BenchmarkViewSet, TestViewSet

router = SimpleRouter(trailing_slash=False)
router.register("v5/artifacts/test", TestViewSet, basename="test")
router.register("v5/artifacts/benchmark", BenchmarkViewSet, basename="benchmark")

urlpatterns = [
    path("", include(router.urls)),
    path(
        "v5/uploads/<uuid:upload_id>/download",
        UploadDownloadView.as_view(),
        name="upload-download",
    ),
    # The schema and its two viewers, served offline from drf-spectacular-sidecar's static files.
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]
