from django.urls import URLPattern, URLResolver, path

from tests_app.pages import views

app_name = "pages"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="home"),
    path("tests/", views.test_list, name="tests"),
    path("tests/compare/", views.compare, name="compare"),
    path("tests/compare/csv", views.compare_csv, name="compare-csv"),
    path("tests/<uuid:test_id>/", views.test_detail, name="test-detail"),
    # next, run, end, stop, archive, export, regrade: POSTed forms, see views.CONTROLS.
    path("tests/<uuid:test_id>/<slug:action>/", views.test_control, name="test-control"),
    path("benchmarks/", views.benchmark_list, name="benchmarks"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("judges/agreement/", views.judge_agreement, name="judge-agreement"),
]
