"""The operators' admin: plugins, every user's jobs, runs with their logs, scheduler nodes.

Everything that changes a job or a plugin goes through ``services`` (validation, the one-active
rule, notifying the schedulers); actions dispatch and return, they never run a plugin inside
the request.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MinValueValidator
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.translation import ngettext

from scheduler_app import plugin_host, schedules, selectors, services, slots
from scheduler_app.config_forms import ConfigField
from scheduler_app.forms import SCHEDULE_FIELDS, schedule_fields, validate_schedule_fields
from scheduler_app.models import Job, JobRun, LogLine, Plugin, SchedulerNode, UserProfile, alive_condition
from scheduler_app.plugin_host import PluginLoadError

admin.site.site_header = "jobscheduler"
admin.site.site_title = "jobscheduler"
admin.site.index_title = "Operations"
# The app list beside every page costs 300 px that the run and plugin lists need at 1280 px.
admin.site.enable_nav_sidebar = False

# How many log lines the run page of the admin shows inline; the users' run page has them all.
LOG_LINES_SHOWN = 500


# --------------------------------------------------------------------------- plugins


def package_load_error(package: str) -> str | None:
    """Return why ``package`` does not load (naming the package, what failed, where it looked), or None."""
    try:
        plugin_host.check_package(package)
    except PluginLoadError as exc:
        return str(exc)
    return None


class PluginAdminForm(forms.ModelForm):
    class Meta:
        model = Plugin
        fields = ["name", "package", "interval", "min_interval", "timeout", "enabled", "description"]
        widgets = {"package": forms.TextInput(attrs={"size": 70})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The database refuses these too (check constraints); the form says so on the field.
        for name in ("interval", "min_interval", "timeout"):
            field = self.fields[name]
            assert isinstance(field, forms.IntegerField)
            field.min_value = 1
            field.validators.append(MinValueValidator(1))
            field.widget.attrs["min"] = 1
        # Older pages and scripts post no minimum: the default (1 s) then.
        self.fields["min_interval"].required = False

    def clean_min_interval(self) -> int:
        value = self.cleaned_data.get("min_interval")
        return 1 if value is None else int(value)

    def clean_package(self) -> str:
        package = (self.cleaned_data.get("package") or "").strip()
        if not package:
            raise ValidationError("Enter the dotted path to the plugin class.")
        error = package_load_error(package)
        if error:
            raise ValidationError(f"The plugin does not load: {error}")
        return package


def available_plugins() -> list[plugin_host.AvailablePlugin]:
    """Discovered plugins (plugins/, MODULE_PATH, entry points) that are not registered yet."""
    registered = set(Plugin.objects.values_list("package", flat=True))
    return sorted((a for a in plugin_host.discover() if a.package not in registered), key=lambda a: a.package)


class RegisterForm(forms.Form):
    package = forms.CharField(max_length=255)
    name = forms.CharField(max_length=100, required=False)
    interval = forms.IntegerField(min_value=1, initial=60, help_text="Seconds between runs of an active job.")


@admin.register(Plugin)
class PluginAdmin(admin.ModelAdmin):
    form = PluginAdminForm
    list_display = ["display_name", "package", "interval", "enabled", "timeout", "job_count", "code_version"]
    list_display_links = ["display_name", "package"]
    list_filter = ["enabled"]
    search_fields = ["name", "package", "description"]
    readonly_fields = ["load_status", "code_version", "created_at", "updated_at"]
    actions = ["enable_plugins", "disable_plugins", "reload_code"]
    change_list_template = "admin/scheduler_app/plugin/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Plugin]:
        # One query for the whole page: the job counts are annotated, not counted per row.
        return (
            super()
            .get_queryset(request)
            .annotate(
                job_total=Count("jobs", distinct=True),
                job_active=Count("jobs", filter=Q(jobs__active=True), distinct=True),
            )
        )

    @admin.display(description="name", ordering="name")
    def display_name(self, obj: Plugin) -> str:
        return obj.display_name

    @admin.display(description="code")
    def load_status(self, obj: Plugin) -> str:
        # The files may have changed since the plugin was registered: say whether they load now.
        if not obj.pk:
            return "-"
        error = package_load_error(obj.package)
        if error:
            return format_html('<span class="errornote" style="display:block">does not load: {}</span>', error)
        return "loads"

    @admin.display(description="jobs (active)", ordering="job_total")
    def job_count(self, obj: Plugin) -> str:
        return f"{obj.job_total} ({obj.job_active})"  # type: ignore[attr-defined]

    def save_model(self, request: HttpRequest, obj: Plugin, form: forms.Form, change: bool) -> None:
        # Through the service, so every scheduler hears about the new interval or state.
        services.update_plugin(obj)

    @admin.action(description="Enable selected plugins", permissions=["change"])
    def enable_plugins(self, request: HttpRequest, queryset: QuerySet[Plugin]) -> None:
        count = services.set_plugins_enabled(queryset, True)
        self.message_user(
            request, ngettext("%d plugin enabled.", "%d plugins enabled.", count) % count, messages.SUCCESS
        )

    @admin.action(description="Disable selected plugins", permissions=["change"])
    def disable_plugins(self, request: HttpRequest, queryset: QuerySet[Plugin]) -> None:
        count = services.set_plugins_enabled(queryset, False)
        self.message_user(
            request, ngettext("%d plugin disabled.", "%d plugins disabled.", count) % count, messages.SUCCESS
        )

    @admin.action(description="Reload code in every scheduler", permissions=["change"])
    def reload_code(self, request: HttpRequest, queryset: QuerySet[Plugin]) -> None:
        reloaded: list[Plugin] = []
        for plugin in queryset:
            try:
                reloaded.append(services.reload_plugin(plugin))
            except PluginLoadError as exc:
                self.message_user(request, f"{plugin}: not reloaded, the old code keeps running. {exc}", messages.ERROR)
        if reloaded:
            names = ", ".join(f"{p} (code version {p.code_version})" for p in reloaded)
            message = ngettext(
                "%(count)d plugin reloaded: %(names)s.", "%(count)d plugins reloaded: %(names)s.", len(reloaded)
            ) % {"count": len(reloaded), "names": names}
            self.message_user(request, message, messages.SUCCESS)

    # -- discovered plugins, registered in one step

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "available/",
                self.admin_site.admin_view(self.available_view),
                name="%s_%s_available" % info,  # noqa: UP031 (Django's own naming pattern)
            ),
            *super().get_urls(),
        ]

    def available_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_add_permission(request):
                raise PermissionDenied
            return self._register(request)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Available plugins",
            "available": available_plugins(),
            "search_path": plugin_host.search_path_description(),
            "has_add_permission": self.has_add_permission(request),
            "default_interval": RegisterForm.base_fields["interval"].initial,
        }
        return TemplateResponse(request, "admin/scheduler_app/plugin/available.html", context)

    def _register(self, request: HttpRequest) -> HttpResponse:
        back = reverse("admin:scheduler_app_plugin_available")
        form = RegisterForm(request.POST)
        if not form.is_valid():
            self.message_user(request, f"Not registered: {form.errors.as_text()}", messages.ERROR)
            return HttpResponseRedirect(back)
        package, interval = form.cleaned_data["package"].strip(), form.cleaned_data["interval"]
        try:
            plugin = services.register_plugin(package, interval=interval, name=form.cleaned_data["name"].strip())
        except PluginLoadError as exc:
            self.message_user(request, f"Not registered, the plugin does not load: {exc}", messages.ERROR)
            return HttpResponseRedirect(back)
        except services.JobRuleError as exc:
            self.message_user(request, f"Not registered: {exc}", messages.ERROR)
            return HttpResponseRedirect(back)
        self.log_addition(request, plugin, [{"added": {}}])
        self.message_user(
            request, f"Registered {plugin} ({plugin.package}), every {plugin.interval} s.", messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:scheduler_app_plugin_change", args=[plugin.pk]))


# --------------------------------------------------------------------------- jobs


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


# --------------------------------------------------------------------------- runs


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the schedulers: operators look, they do not edit."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RunUserFilter(admin.SimpleListFilter):
    title = "user"
    parameter_name = "user"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        users = get_user_model().objects.filter(jobs__isnull=False).distinct().order_by("username")
        return [(user.pk, str(user)) for user in users]

    def queryset(self, request: HttpRequest, queryset: QuerySet[JobRun]) -> QuerySet[JobRun]:
        value = self.value()
        return queryset.filter(job__user_id=value) if value and value.isdigit() else queryset


class RunNodeFilter(admin.SimpleListFilter):
    title = "node"
    parameter_name = "node"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        return [
            (name, name)
            for name in SchedulerNode.objects.order_by("-last_heartbeat").values_list("name", flat=True)[:50]
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[JobRun]) -> QuerySet[JobRun]:
        return queryset.filter(node=self.value()) if self.value() else queryset


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "status",
        "job_label",
        "user",
        "plugin",
        "slot",
        "attempt",
        "duration_display",
        "node",
        "trigger",
        "log_count",
    ]
    list_display_links = ["id", "job_label"]
    actions = ["cancel_runs"]
    # The filters list their choices from the small tables (plugins, users with jobs, nodes):
    # Django's "related only" and "all values" filters scan every run for them on each page view.
    list_filter = ["status", ("job__plugin", admin.RelatedFieldListFilter), RunUserFilter, RunNodeFilter, "trigger"]
    list_select_related = ["job", "job__user", "job__plugin"]
    search_fields = ["=id", "job__description", "job__user__username", "plugin_package", "node", "error"]
    date_hierarchy = "slot"
    # Newest first by primary key: the index every run has (there is no index on slot alone,
    # and adding one would slow every run's insert for the sake of this page).
    ordering = ["-id"]
    # Counting every run of a busy system on each page view is slow on PostgreSQL.
    show_full_result_count = False
    readonly_fields = [
        "job",
        "slot",
        "attempt",
        "trigger",
        "status",
        "cancelled_by",
        "cancel_requested_at",
        "node",
        "plugin_package",
        "created_at",
        "started_at",
        "finished_at",
        "duration_display",
        "error",
        "traceback_display",
        "log_count",
        "log",
    ]
    fields = tuple(readonly_fields)

    @admin.action(description="Cancel selected runs (queued or running)")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[JobRun]) -> None:
        # The service asks the node running each one (a message, the database flag as fallback)
        # and returns at once; it never waits for the run to stop.
        done, problems = 0, []
        for run in queryset.filter(status__in=[JobRun.Status.QUEUED, JobRun.Status.RUNNING]):
            try:
                services.cancel_run(run, request.user)
            except services.JobRuleError as exc:
                problems.append(str(exc))
            else:
                done += 1
        self.message_user(
            request,
            ngettext("%d run cancelled or asked to stop.", "%d runs cancelled or asked to stop.", done) % done,
            messages.SUCCESS,
        )
        for problem in problems:
            self.message_user(request, problem, messages.WARNING)

    @admin.display(description="job", ordering="job__description")
    def job_label(self, obj: JobRun) -> str:
        return obj.job.description or f"job {obj.job_id}"

    @admin.display(description="user", ordering="job__user__username")
    def user(self, obj: JobRun) -> Any:
        return obj.job.user

    @admin.display(description="plugin", ordering="job__plugin__name")
    def plugin(self, obj: JobRun) -> Any:
        return obj.job.plugin

    @admin.display(description="duration")
    def duration_display(self, obj: JobRun) -> str:
        duration = obj.duration
        if duration is None:
            if obj.started_at and not obj.is_finished:
                return f"running for {(timezone.now() - obj.started_at).total_seconds():.1f} s"
            return "-"
        return f"{duration.total_seconds():.2f} s"

    @admin.display(description="traceback")
    def traceback_display(self, obj: JobRun) -> str:
        if not obj.traceback:
            return "-"
        return format_html('<pre style="white-space:pre-wrap">{}</pre>', obj.traceback)

    @admin.display(description="log")
    def log(self, obj: JobRun) -> str:
        lines = list(
            LogLine.objects.filter(run=obj)
            .order_by("-seq")
            .values_list("seq", "created_at", "level", "message")[:LOG_LINES_SHOWN]
        )
        lines.reverse()
        link = _run_page_link(obj)
        if not lines:
            return format_html("no log lines{}", link)
        body = format_html_join(
            "\n",
            "{:>5} {} {:<8} {}",
            (
                (
                    seq,
                    timezone.localtime(at).strftime("%H:%M:%S.%f")[:-3],
                    LogLine(level=level).level_name,
                    _TERMINAL_ESCAPES.sub("", message),
                )
                for seq, at, level, message in lines
            ),
        )
        more = ""
        if obj.log_count > len(lines):
            more = format_html(
                '<p>Showing the last {} of {} lines; <a href="{}">download the whole log</a>.</p>',
                len(lines),
                obj.log_count,
                reverse("run_log", args=[obj.pk]),
            )
        return format_html(
            '{}<pre style="max-height:40em;overflow:auto;white-space:pre-wrap">{}</pre>{}', more, body, link
        )


#: Colour and cursor codes in log lines: the admin shows plain text (the run page colours them,
#: static/js/logview.js being the one ANSI renderer); left in, they show as boxes.
_TERMINAL_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _run_page_link(run: JobRun) -> str:
    """A link to the run's page on the users' side, where the log streams live."""
    return format_html(' <a href="{}">open the live log page</a>', reverse("run", args=[run.pk]))


# --------------------------------------------------------------------------- scheduler nodes


class AliveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "alive"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "alive"), ("no", "dead or stopped")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[SchedulerNode]) -> QuerySet[SchedulerNode]:
        if self.value() == "yes":
            return queryset.filter(alive_condition())
        if self.value() == "no":
            return queryset.exclude(alive_condition())
        return queryset


@admin.register(SchedulerNode)
class SchedulerNodeAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "alive",
        "last_heartbeat",
        "runs_running",
        "scheduled_jobs",
        "started_at",
        "stopped_at",
        "lost_at",
    ]  # hostname and pid are in the name (host:pid:random) and on the node's page
    list_filter = [AliveFilter]
    search_fields = ["name", "hostname"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[SchedulerNode]:
        # Count from the runs themselves (what is really running there), one subquery per page.
        running = (
            JobRun.objects.filter(node=OuterRef("name"), status=JobRun.Status.RUNNING)
            .order_by()
            .values("node")
            .annotate(n=Count("id"))
            .values("n")
        )
        nodes: Any = super().get_queryset(request)  # a SchedulerNodeQuerySet
        return nodes.with_alive().annotate(running_now=Coalesce(Subquery(running), Value(0)))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Dead nodes pile up after restarts; operators may clear them once they are gone.
        return bool(request.user.is_superuser) and (obj is None or not obj.is_alive)

    @admin.display(description="alive", boolean=True)
    def alive(self, obj: SchedulerNode) -> bool:
        return obj.is_alive

    @admin.display(description="running runs", ordering="running_now")
    def runs_running(self, obj: SchedulerNode) -> str:
        count: int = obj.running_now  # type: ignore[attr-defined]
        if not count:
            return "0"
        url = (
            reverse("admin:scheduler_app_jobrun_changelist")
            + "?"
            + urlencode({"node": obj.name, "status__exact": "running"})
        )
        return format_html('<a href="{}">{}</a>', url, count)


# --------------------------------------------------------------------------- user profiles


class UserProfileForm(forms.ModelForm):
    class Meta:
        model = UserProfile
        fields = ["user", "timezone"]

    def clean_timezone(self) -> str:
        name = (self.cleaned_data.get("timezone") or "").strip()
        if name:
            try:
                schedules.zone(name)
            except schedules.ScheduleError as exc:
                raise ValidationError(str(exc)) from exc
        return name


@admin.register(UserProfile)
class UserProfileAdmin(admin.ModelAdmin):
    """Each user's time zone: the one their new jobs start with."""

    form = UserProfileForm
    list_display = ["user", "timezone"]
    search_fields = ["user__username", "timezone"]
    autocomplete_fields = ["user"]


# The audit trail and alerts have their own admin module.
from scheduler_app import ops_admin  # noqa: E402,F401
