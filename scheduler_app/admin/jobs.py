"""Every user's jobs in the admin: the config form from the plugin's schema, the schedule fields,
the recent and next runs, and the activate, deactivate and run-now actions (all through
``services``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.validators import MinValueValidator
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from scheduler_app import schedules, selectors, services, slots
from scheduler_app.config_forms import ConfigField
from scheduler_app.forms import SCHEDULE_FIELDS, schedule_fields, validate_schedule_fields
from scheduler_app.models import Job, JobRun, Plugin


class JobAdminForm(forms.ModelForm):
    # Not the model field: activation goes through the service, which swaps atomically.
    active = forms.BooleanField(
        required=False,
        help_text="Activating deactivates the other active job of this user and plugin.",
    )
    # Replaced in __init__ by the plugin's schema form field.
    config = forms.JSONField(required=False)

    class Meta:
        model = Job
        fields = ["user", "description", "timeout"]

    def __init__(self, *args: Any, plugin: Plugin | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plugin = plugin
        if not self.instance.pk and plugin is not None:
            self.instance.plugin = plugin  # shown read-only above the form
        self.fields["active"].initial = bool(self.instance.pk and self.instance.active)
        if plugin is not None:
            self.fields["config"] = ConfigField(plugin, stored=self.instance.config if self.instance.pk else None)
        if self.instance.pk:
            # A job's config belongs to its user; moving it to another user is not an edit.
            self.fields["user"].disabled = True
        timeout = self.fields["timeout"]
        assert isinstance(timeout, forms.IntegerField)
        timeout.min_value = 1
        timeout.validators.append(MinValueValidator(1))
        # The schedule fields are the users' form's; their rules are services.validate_schedule's.
        self.fields.update(schedule_fields())
        if self.instance.pk:
            self.initial.update(asdict(services.JobSchedule.of(self.instance)))
            self.initial["timezone"] = self.instance.effective_timezone

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        owner = self.instance.user if self.instance.pk else data.get("user")
        validate_schedule_fields(self, self.plugin, owner)
        return data


class ChoosePluginForm(forms.Form):
    plugin = forms.ModelChoiceField(
        queryset=Plugin.objects.all(), help_text="The configuration form depends on the plugin."
    )


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    form = JobAdminForm
    list_display = ["__str__", "user", "plugin", "active", "schedule_text", "config_check", "last_run", "updated_at"]
    list_filter = [("user", admin.RelatedOnlyFieldListFilter), "plugin", "active"]
    list_select_related = ["user", "plugin"]
    search_fields = ["description", "user__username", "plugin__name", "plugin__package"]
    autocomplete_fields = ["user"]
    readonly_fields = ["plugin_link", "config_check", "created_at", "updated_at", "recent_runs", "next_runs"]
    actions = ["activate_jobs", "deactivate_jobs", "run_jobs_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        # The latest run of each job in the same query (the unique (job, slot, attempt) index serves the subquery).
        latest = JobRun.objects.filter(job=OuterRef("pk")).order_by("-slot", "-id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_run_id=Subquery(latest.values("id")[:1]), last_run_status=Subquery(latest.values("status")[:1])
            )
        )

    @admin.display(description="schedule", ordering="schedule")
    def schedule_text(self, obj: Job) -> str:
        if not obj.schedule:
            return "plugin interval"
        if obj.schedule.startswith("every"):
            return obj.schedule  # elapsed time: the time zone changes nothing
        return f"{obj.schedule} ({obj.effective_timezone})"

    @admin.display(description="next runs")
    def next_runs(self, obj: Job) -> str:
        """The saved schedule in words and its next five slots, in the job's time zone."""
        timing = selectors.job_timing(obj, obj.plugin) if obj.pk else None
        if timing is None:
            return "-"
        now_ms = slots.to_ms(timezone.now())
        zone = schedules.zone(timing.timezone)
        times = [slots.to_datetime(ms).astimezone(zone) for ms in schedules.next_slots(timing, now_ms, 5)]
        rows = format_html_join("", "<li>{}</li>", ((t.strftime(services.SchedulePreview.TIME_FORMAT),) for t in times))
        words = schedules.describe(timing.schedule, timing.timezone, obj.plugin.interval)
        state = "" if obj.active and obj.plugin.enabled else " (not scheduled now: the job or its plugin is off)"
        return format_html("{}{}<ol>{}</ol>", words, state, rows)

    @admin.display(description="last run")
    def last_run(self, obj: Job) -> str:
        run_id = getattr(obj, "last_run_id", None)
        if run_id is None:
            return "-"
        url = reverse("admin:scheduler_app_jobrun_change", args=[run_id])
        return format_html('<a href="{}">{}</a>', url, JobRun.Status(obj.last_run_status).label)  # type: ignore[attr-defined]

    @admin.display(description="config")
    def config_check(self, obj: Job) -> str:
        """Whether the stored config still validates for the plugin's current code."""
        if not obj.pk:
            return "-"
        problem = services.config_problem(obj)
        if problem is None:
            return format_html('<span class="config-ok">{}</span>', "valid")
        return format_html(
            '<strong class="config-invalid" title="{}">no longer valid</strong>: {}; it cannot be activated '
            "or run until it is saved with valid values",
            problem,
            problem,
        )

    # -- the form: plugin first, then its schema form

    def _plugin_for(self, request: HttpRequest, obj: Job | None) -> Plugin | None:
        if obj is not None:
            return obj.plugin
        # The add form posts back to its own URL, so ?plugin= is there on GET and POST alike.
        plugin_id = request.GET.get("plugin")
        if not plugin_id or not str(plugin_id).isdigit():
            return None
        return Plugin.objects.filter(pk=plugin_id).first()

    def get_form(self, request: HttpRequest, obj: Job | None = None, change: bool = False, **kwargs: Any) -> Any:
        plugin = self._plugin_for(request, obj)
        base = super().get_form(request, obj, change=change, **kwargs)

        class BoundPluginForm(base):  # type: ignore[misc,valid-type]
            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, plugin=plugin, **kw)

        return BoundPluginForm

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> Any:
        main = ["plugin_link", "user", "description", "active", "timeout", "config"]
        if obj is not None:
            main.insert(5, "config_check")
        timing = [*SCHEDULE_FIELDS, "next_runs"] if obj is not None else list(SCHEDULE_FIELDS)
        fieldsets: list[Any] = [(None, {"fields": main}), ("When it runs", {"fields": timing})]
        if obj is not None:
            fieldsets.append(("History", {"fields": ["created_at", "updated_at", "recent_runs"]}))
        return fieldsets

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None) -> Any:
        if self._plugin_for(request, None) is None:
            return self._choose_plugin_view(request)
        return super().add_view(request, form_url, extra_context)

    def _choose_plugin_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Add job: choose the plugin",
            "form": ChoosePluginForm(request.GET or None),
            "has_plugins": Plugin.objects.exists(),
        }
        return TemplateResponse(request, "admin/scheduler_app/job/choose_plugin.html", context)

    @admin.display(description="plugin")
    def plugin_link(self, obj: Job | None) -> str:
        plugin = obj.plugin if obj is not None and obj.plugin_id else None
        if plugin is None:
            return "-"
        url = reverse("admin:scheduler_app_plugin_change", args=[plugin.pk])
        return format_html('<a href="{}">{}</a> <code>{}</code>', url, plugin, plugin.package)

    @admin.display(description="recent runs")
    def recent_runs(self, obj: Job) -> str:
        if not obj.pk:
            return "-"
        runs = list(obj.runs.order_by("-slot")[:10])
        if not runs:
            return "no runs yet"
        rows = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} ({})</li>',
            (
                (
                    reverse("admin:scheduler_app_jobrun_change", args=[r.pk]),
                    timezone.localtime(r.slot).strftime(schedules.TIME_FORMAT),
                    r.get_status_display(),
                    r.node or "-",
                )
                for r in runs
            ),
        )
        url = reverse("admin:scheduler_app_jobrun_changelist") + f"?job__id__exact={obj.pk}"
        return format_html('<ul style="margin-left:0">{}</ul><a href="{}">all runs</a>', rows, url)

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        response = super().render_change_form(request, context, *args, **kwargs)
        # A refused submission is a client error, as on the users' pages (the admin answers 200).
        form = context.get("adminform") and context["adminform"].form
        if form is not None and form.is_bound and form.errors:
            response.status_code = 400
        return response

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        initial.pop("plugin", None)  # ?plugin= picks the schema form; it is not a form field
        return initial

    def save_model(self, request: HttpRequest, obj: Job, form: Any, change: bool) -> None:
        """Create or update through the service so nothing invalid is saved and schedulers hear of it."""
        data = form.cleaned_data
        if not change:
            plugin = form.plugin
            job = services.create_job(
                data["user"],
                plugin,
                data["config"],
                description=data.get("description") or "",
                timeout=data.get("timeout"),
                activate=bool(data.get("active")),
                schedule=data["job_schedule"],
            )
            # The admin goes on with ``obj`` (redirect, history): make it the saved job.
            obj.pk, obj.plugin, obj.config, obj.active = job.pk, job.plugin, job.config, job.active
            obj.created_at, obj.updated_at = job.created_at, job.updated_at
            obj._state.adding = False
            return
        job = Job.objects.select_related("plugin").get(pk=obj.pk)
        services.update_job(
            job,
            config=data["config"],
            description=data.get("description") or "",
            timeout=data.get("timeout"),
            schedule=data["job_schedule"],
        )
        if data.get("active") and not job.active:
            try:
                services.activate_job(job)
            except services.JobRuleError as exc:
                self.message_user(request, str(exc), messages.ERROR)
        elif not data.get("active") and job.active:
            services.deactivate_job(job)

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        services.delete_job(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            services.delete_job(job)

    # -- actions

    def _bulk_active(self, request: HttpRequest, queryset: QuerySet[Job], active: bool) -> None:
        result = services.bulk_set_active(queryset.select_related("user", "plugin"), active)
        changed, problems = result.changed, result.problems
        verb = "activated" if active else "deactivated"
        self.message_user(
            request,
            ngettext("%(count)d job %(verb)s.", "%(count)d jobs %(verb)s.", changed) % {"count": changed, "verb": verb},
            messages.SUCCESS if changed or not problems else messages.WARNING,
        )
        if result.replaced:
            # One active job per user and plugin: say which ones the activation switched off.
            count = len(result.replaced)
            lead = ngettext("%d job deactivated in their place: ", "%d jobs deactivated in their place: ", count)
            self.message_user(request, lead % count + "; ".join(str(job) for job in result.replaced), messages.WARNING)
        if problems:
            refused = ngettext("%d job refused: ", "%d jobs refused: ", len(problems)) % len(problems)
            self.message_user(request, refused + "; ".join(problems), messages.WARNING)

    @admin.action(description="Activate selected jobs", permissions=["change"])
    def activate_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._bulk_active(request, queryset, True)

    @admin.action(description="Deactivate selected jobs", permissions=["change"])
    def deactivate_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._bulk_active(request, queryset, False)

    @admin.action(description="Run selected jobs now", permissions=["change"])
    def run_jobs_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        # Queue and return: a scheduler claims each run; nothing executes inside this request.
        queued, refused = 0, []
        for job in queryset.select_related("plugin", "user"):
            try:
                services.run_now(job)
                queued += 1
            except services.JobRuleError as exc:
                refused.append(f"{job}: {exc}")
        self.message_user(
            request,
            ngettext("%d run queued; a scheduler picks it up.", "%d runs queued; schedulers pick them up.", queued)
            % queued,
            messages.SUCCESS if queued else messages.WARNING,
        )
        if refused:
            self.message_user(request, "Not queued: " + "; ".join(refused), messages.WARNING)
