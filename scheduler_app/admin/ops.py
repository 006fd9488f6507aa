"""The operators' admin for the audit trail and failure alerts.

- Audit trail: read-only, filterable by action, channel ("through"), who and plugin; seen
  only by staff holding ``view_auditentry`` (superusers do).
- Alert rules: operators set the defaults (a rule without a job applies to every job whose
  owner set none) and can see every owner's rule.
- Alert deliveries: every message with its attempts and last error, read-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from scheduler_app.admin.common import ReadOnlyAdmin as _ReadOnly
from scheduler_app.ops_models import AlertDelivery, AlertRule, AuditEntry, JobAlertState


@admin.register(AuditEntry)
class AuditEntryAdmin(_ReadOnly):
    list_display = ["at", "actor_name", "via", "action", "summary", "job_link", "owner"]
    list_filter = ["action", "via", ("plugin", admin.RelatedOnlyFieldListFilter), "at"]
    search_fields = ["summary", "actor_name", "=job_ref", "owner__username", "action"]
    date_hierarchy = "at"
    list_select_related = ["owner"]
    ordering = ["-at", "-id"]
    show_full_result_count = False
    fields = ("at", "actor_name", "actor", "via", "action", "summary", "job_link", "owner", "plugin", "changes_table")
    readonly_fields = fields

    @admin.display(description="job", ordering="job_ref")
    def job_link(self, obj: AuditEntry) -> str:
        if obj.job_ref is None:
            return "-"
        return format_html('<a href="{}">job {}</a>', reverse("job_history", args=[obj.job_ref]), obj.job_ref)

    @admin.display(description="changes")
    def changes_table(self, obj: AuditEntry) -> str:
        if not obj.changes:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((field, _show(v[0] if isinstance(v, list) else v), _show(v[1] if isinstance(v, list) else ""))
             for field, v in obj.changes.items()),
        )  # fmt: skip
        return format_html("<table><tr><th>field</th><th>before</th><th>after</th></tr>{}</table>", rows)


def _show(value: Any) -> str:
    return "—" if value is None else str(value)


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["__str__", "enabled", "email", "webhook_url", "after_failures", "notify_recovery", "updated_at"]
    list_filter = ["enabled", ("job", admin.EmptyFieldListFilter)]
    search_fields = ["email", "webhook_url", "job__description", "job__user__username"]
    raw_id_fields = ["job"]
    list_select_related = ["job"]


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(_ReadOnly):
    list_display = [
        "created_at",
        "job",
        "kind",
        "channel",
        "target",
        "status",
        "attempts",
        "response_code",
        "short_error",
    ]
    list_select_related = ["job", "job__plugin", "job__user"]
    list_filter = ["status", "kind", "channel", "created_at"]
    search_fields = ["target", "subject", "last_error", "=job__id"]
    date_hierarchy = "created_at"
    ordering = ["-id"]
    show_full_result_count = False
    fields = (
        "created_at", "job", "run", "kind", "channel", "target", "subject", "body", "status", "attempts",
        "next_attempt_at", "response_code", "last_error", "sent_at",
    )  # fmt: skip
    readonly_fields = fields

    @admin.display(description="last error")
    def short_error(self, obj: AlertDelivery) -> str:
        return obj.last_error[:80]


@admin.register(JobAlertState)
class JobAlertStateAdmin(_ReadOnly):
    list_display = ["job", "state", "consecutive_failures", "last_run_id", "changed_at"]
    list_filter = ["state"]
    list_select_related = ["job", "job__plugin", "job__user"]
    search_fields = ["=job__id", "job__description"]
