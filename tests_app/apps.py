from django.apps import AppConfig


class TestsAppConfig(AppConfig):
    name = "tests_app"
    verbose_name = "Benchmark tests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tests_app import signals

        signals.connect_user_signals()
