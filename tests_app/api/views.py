"""The Test artifact API: one viewset, an action per endpoint (POST /api/v5/artifacts/test/<name>).

The actions live in mixins by concern so that each file stays small; viewsets only wire: parse with
an input serializer, call one service or selector, render with an output serializer.
"""

from rest_framework import viewsets

from tests_app.api.compare_views import CompareActions
from tests_app.api.discovery_views import DiscoveryActions
from tests_app.api.lifecycle_views import BenchmarkActions, LifecycleActions
from tests_app.api.run_all_views import RunAllActions


class TestViewSet(
    LifecycleActions, DiscoveryActions, CompareActions, RunAllActions, viewsets.ViewSet
):
    __test__ = False


class BenchmarkViewSet(BenchmarkActions, viewsets.ViewSet):
    pass
