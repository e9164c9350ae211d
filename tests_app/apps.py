from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class TestsAppConfig(AppConfig):
    name = "tests_app"
    verbose_name = "Benchmark tests"
    default_auto_field = "django.db.models.BigAutoField"
    default = True  # the app's config; the admin's config below is named explicitly

    def ready(self) -> None:
        from tests_app import signals

        signals.connect_user_signals()


class AdminConfig(admin_apps.AdminConfig):
    """Django's admin on a site that also lets department operators in."""

    default = False  # named in INSTALLED_APPS in place of django.contrib.admin
    default_site = "tests_app.admin_site.ReplaybenchAdminSite"
