from django.contrib import admin
from django.urls import include, path

from tests_app.api import errors

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("tests_app.api.urls")),
    path("", include("tests_app.pages.urls")),
]

handler404 = errors.not_found_view
handler500 = errors.server_error_view
