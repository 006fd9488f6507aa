"""Plugins in the admin: registered plugins, their check and reload actions, and the page of
plugins found on the search path that registers one in a step."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MinValueValidator
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import ngettext

from scheduler_app import plugin_host, services
from scheduler_app.models import Plugin
from scheduler_app.plugin_host import PluginLoadError


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
