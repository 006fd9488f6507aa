"""Runs in the admin: read-only, filterable by user, node and status, each with its log."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from scheduler_app import services
from scheduler_app.admin.common import ReadOnlyAdmin, node_name_html
from scheduler_app.models import JobRun, LogLine, SchedulerNode

# How many log lines the run page of the admin shows inline; the users' run page has them all.
LOG_LINES_SHOWN = 500


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
        "node_display",
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

    @admin.display(description="node", ordering="node")
    def node_display(self, obj: JobRun) -> str:
        return node_name_html(obj.node)

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
