from django.apps import AppConfig


class TestsAppConfig(AppConfig):
    name = "tests_app"
    verbose_name = "Benchmark tests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from tests_app import db, signals

        signals.connect_user_signals()
        connection_created.connect(db.use_c_timestamps, dispatch_uid="replaybench-c-timestamps")
