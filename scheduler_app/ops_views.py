"""The job's "history and alerts" page: its audit trail and its owner's alert rule.

The audit entries of a job are shown to its owner and to operators who hold the
``scheduler_app.view_auditentry`` permission (superusers do); anyone else gets a 404, as
everywhere on the users' pages. Only the owner changes the alert rule, through
``alerts.set_job_rule`` (which records the change in the audit trail).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from scheduler_app import alerts
from scheduler_app.models import Job
from scheduler_app.ops_models import AlertDelivery, AlertRule, AuditEntry

#: Entries the page shows (newest first); the admin has them all, filterable.
AUDIT_SHOWN = 100
AUDIT_PERMISSION = "scheduler_app.view_auditentry"


class AlertRuleForm(forms.Form):
    enabled = forms.BooleanField(label="Send alerts for this job", required=False, initial=True)
    email = forms.CharField(
        label="Email to",
        required=False,
        max_length=500,
        help_text="Comma-separated addresses.",
        widget=forms.TextInput(attrs={"placeholder": "me@example.com"}),
    )
    webhook_url = forms.URLField(
        label="Webhook URL",
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text="Receives a JSON POST with a Slack-compatible “text” field.",
    )
    after_failures = forms.IntegerField(
        label="Say it is failing after", min_value=1, max_value=1000, initial=1, help_text="Failed runs in a row."
    )
    notify_recovery = forms.BooleanField(label="Tell me when it recovers", required=False, initial=True)

    def clean_email(self) -> str:
        from django.core.validators import validate_email

        addresses = [a.strip() for a in self.cleaned_data["email"].split(",") if a.strip()]
        for address in addresses:
            try:
                validate_email(address)
            except forms.ValidationError:
                raise forms.ValidationError(f"“{address}” is not an email address.") from None
        return ", ".join(addresses)


def may_see_audit(user: Any, owner_id: int | None) -> bool:
    """The one rule for who sees a job's audit entries: its owner and permitted operators."""
    return bool(user.is_authenticated and (user.pk == owner_id or user.has_perm(AUDIT_PERMISSION)))


def _rule_initial(rule: AlertRule | None) -> dict[str, Any]:
    if rule is None:
        return {}
    return {
        "enabled": rule.enabled,
        "email": rule.email,
        "webhook_url": rule.webhook_url,
        "after_failures": rule.after_failures,
        "notify_recovery": rule.notify_recovery,
    }


@login_required
@require_http_methods(["GET", "POST"])
def job_history(request: HttpRequest, job_id: int) -> HttpResponse:
    job = Job.objects.select_related("plugin", "user").filter(pk=job_id).first()
    owner_id = (
        job.user_id if job else AuditEntry.objects.filter(job_ref=job_id).values_list("owner_id", flat=True).first()
    )
    if owner_id is None or not may_see_audit(request.user, owner_id):
        raise Http404("no such job")
    is_owner = owner_id == request.user.pk
    rule = AlertRule.objects.filter(job_id=job_id).first() if job else None
    form = AlertRuleForm(initial=_rule_initial(rule))
    if request.method == "POST":
        if job is None or not is_owner:
            raise Http404("no such job")
        form = AlertRuleForm(request.POST)
        if form.is_valid():
            alerts.set_job_rule(job, **form.cleaned_data)
            messages.success(request, "Saved the alerts of this job.")
            return HttpResponseRedirect(reverse("job_history", args=[job_id]))
        messages.error(request, "The alerts were not saved: please correct the errors below.")
    entries = list(
        AuditEntry.objects.filter(job_ref=job_id).select_related("actor").order_by("-at", "-id")[:AUDIT_SHOWN]
    )
    deliveries = list(AlertDelivery.objects.filter(job_id=job_id).order_by("-created_at", "-id")[:20]) if job else []
    return render(
        request,
        "scheduler_app/job_history.html",
        {
            "job": job,
            "job_id": job_id,
            "entries": entries,
            "form": form,
            "is_owner": is_owner,
            "has_defaults": AlertRule.objects.filter(job__isnull=True, enabled=True).exists(),
            "has_rule": rule is not None,
            "deliveries": deliveries,
        },
        status=400 if form.is_bound and form.errors else 200,
    )
