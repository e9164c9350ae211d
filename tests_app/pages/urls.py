from django.urls import URLPattern, URLResolver, path

from tests_app.pages import views

app_name = "pages"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="home"),
    path("tests/", views.test_list, name="tests"),
    path("tests/<uuid:test_id>/", views.test_detail, name="test-detail"),
    path("tests/<uuid:test_id>/next/", views.control_next, name="test-next"),
    path("tests/<uuid:test_id>/run/", views.control_run, name="test-run"),
    path("tests/<uuid:test_id>/end/", views.control_end, name="test-end"),
    path("tests/<uuid:test_id>/stop/", views.control_stop, name="test-stop"),
    path("tests/<uuid:test_id>/archive/", views.control_archive, name="test-archive"),
    path("tests/<uuid:test_id>/export/", views.control_export, name="test-export"),
    path("tests/<uuid:test_id>/regrade/", views.control_regrade, name="test-regrade"),
    path("benchmarks/", views.benchmark_list, name="benchmarks"),
    path("dashboard/", views.dashboard, name="dashboard"),
]
