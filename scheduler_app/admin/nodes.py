"""Scheduler nodes in the admin: alive or not, what each runs now; dead ones may be cleared."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from scheduler_app.admin.common import ReadOnlyAdmin, node_name_html
from scheduler_app.models import JobRun, SchedulerNode, alive_condition


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
        "name_display",
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

    @admin.display(description="name", ordering="name")
    def name_display(self, obj: SchedulerNode) -> str:
        return node_name_html(obj.name)

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
