from __future__ import annotations

from django.apps import AppConfig


class SchedulerAppConfig(AppConfig):
    name = "scheduler_app"
    verbose_name = "Job scheduler"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import pre_save

        from scheduler_app import audit, checks  # noqa: F401  (checks registers system checks)
        from scheduler_app.fixtures import check_fixture_object

        # Fixtures save raw, past services: this receiver applies the same rules to them.
        for model in self.get_models():
            pre_save.connect(check_fixture_object, sender=model, dispatch_uid=f"fixture-rules-{model.__name__}")
        # ... and this one records them in the audit trail.
        audit.connect_signals()
