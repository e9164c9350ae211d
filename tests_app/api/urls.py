from django.urls import include, path
from rest_framework.routers import SimpleRouter

from tests_app.api.views import BenchmarkViewSet, TestViewSet

router = SimpleRouter(trailing_slash=False)
router.register("v5/artifacts/test", TestViewSet, basename="test")
router.register("v5/artifacts/benchmark", BenchmarkViewSet, basename="benchmark")

urlpatterns = [
    path("", include(router.urls)),
]
