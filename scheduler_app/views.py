"""The users' pages: dashboard, plugin page with job actions, run history and run page.

Every view requires login. Objects are looked up through the requesting user: someone
else's job or run is a 404, never a 403, so ids leak nothing. Users with the permission to
read every user's jobs (``access.can_view``: ``scheduler_app.view_job``, not ``is_staff``)
may *view* any user's pages (``?user=<id>`` or ``/users/<id>/plugins/<id>/``) but change only
their own jobs here; operators change other people's jobs in the admin. Every change goes
through ``scheduler_app.services``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict
from functools import lru_cache, wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.db import close_old_connections
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.html import format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from scheduler_app import access, schedules, selectors, services, stats, streams, tracebacks
from scheduler_app.compiled_sql import CompiledQuery
from scheduler_app.fast_urls import id_url
from scheduler_app.forms import ConfirmDeleteForm, JobForm
from scheduler_app.models import Job, JobRun, Plugin
from scheduler_app.plugin_host import PluginLoadError
from scheduler_app.services import ConfigValidationError, JobRuleError, ScheduleValidationError

User = get_user_model()

# Defence in depth for pages that show text written by plugins: only this site's own scripts
# run (no inline script, no eval), and the only connections are back to this site (websockets
# included). django-jsonform's React sets styles from script, hence 'unsafe-inline' for styles.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def csp(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    return wrapped


# --- who is looked at ----------------------------------------------------------------------


def _subject(request: HttpRequest, user_id: int | None = None) -> Any:
    """The user whose pages are shown: the requester, or (if they may read it) the one named."""
    if user_id is None:
        raw = request.GET.get("user")
        if raw:
            try:
                user_id = int(raw)
            except ValueError:
                raise Http404("no such user") from None
    if user_id is None or user_id == request.user.pk:
        return request.user
    if not access.can_view(request.user, user_id):
        raise Http404("no such user")
    return get_object_or_404(User, pk=user_id)


def _uid(request: HttpRequest) -> int:
    """The requester's id (every view here requires login)."""
    return int(request.user.pk or 0)


def _own_job(request: HttpRequest, job_id: int) -> Job:
    """A job the requester may change: their own, whoever they are."""
    return get_object_or_404(Job.objects.select_related("plugin"), pk=job_id, user_id=_uid(request))


# Fixed queries of the pages, compiled once per process (scheduler_app/compiled_sql.py).
_JOB_WITH_PLUGIN_AND_OWNER = CompiledQuery(
    lambda job_id: Job.objects.select_related("plugin", "user").filter(pk=job_id), job_id=-7_000_011
)
_PLUGIN = CompiledQuery(lambda plugin_id: Plugin.objects.filter(pk=plugin_id), plugin_id=-7_000_012)


def _one_or_404(rows: list[Any], what: str) -> Any:
    if not rows:
        raise Http404(f"no such {what}")
    return rows[0]


def _visible_job(request: HttpRequest, job_id: int) -> Job:
    job: Job = _one_or_404(_JOB_WITH_PLUGIN_AND_OWNER.run(job_id=job_id), "job")
    if not access.can_view(request.user, job.user_id):
        raise Http404("no such job")
    return job


def _visible_run(request: HttpRequest, run_id: int) -> JobRun:
    run = get_object_or_404(JobRun.objects.select_related("job__plugin", "job__user"), pk=run_id)
    if not access.can_view(request.user, run.job.user_id):
        raise Http404("no such run")
    return run


def _plugin_url(plugin: Plugin, user: Any, request: HttpRequest, job: Job | None = None) -> str:
    if user.pk == request.user.pk:
        url = reverse("plugin", args=[plugin.pk])
    else:
        url = reverse("user_plugin", args=[user.pk, plugin.pk])
    return f"{url}#job-{job.pk}" if job else url


def _add_urls(rows: list[selectors.JobRow]) -> None:
    for row in rows:
        row.history_url = id_url("job_runs", row.pk)
        if row.last_run is not None:
            row.last_run_url = id_url("run", row.last_run.pk)


def _add_stats(rows: list[selectors.JobRow]) -> None:
    """Each job's recent-runs chart and success rate: one query for the whole page."""
    recent = stats.recent_runs([row.pk for row in rows])
    for row in rows:
        row.stats = recent[row.pk]  # type: ignore[attr-defined]


# --- pages ---------------------------------------------------------------------------------


@csp
@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    subject = _subject(request)
    rows = selectors.dashboard(subject)
    for row in rows:
        row.url = _plugin_url(row.plugin, subject, request)
        _add_urls(row.jobs)
    _add_stats([job for row in rows for job in row.jobs])
    owners = None
    if access.can_view_all(request.user):  # may look at anyone's pages: offer the users who have jobs
        owners = User.objects.filter(jobs__isnull=False).distinct().order_by("username")[:500]
    return render(
        request,
        "scheduler_app/dashboard.html",
        {"rows": rows, "subject": subject, "is_self": subject.pk == request.user.pk, "owners": owners},
    )


@lru_cache(maxsize=1)
def _zone_options() -> SafeString:
    """The time-zone suggestions as ``<option>`` tags, built once per process: the ~600 names
    through the template's loop were the largest part of the plugin page (cProfile, in-process:
    11.4 ms of CPU per page with the loop)."""
    return format_html_join("", '<option value="{}">', ((name,) for name in schedules.zone_names()))


def _job_form(plugin: Plugin, job: Job, owner: Any, readonly: bool, data: Any = None) -> JobForm:
    initial = {"description": job.description, **asdict(services.JobSchedule.of(job))}
    initial["timezone"] = job.effective_timezone
    return JobForm(
        plugin,
        data,
        prefix=f"job-{job.pk}",
        stored=job.config,
        readonly=readonly,
        initial=initial,
        user=owner,
        job=job,
    )


def _new_form(plugin: Plugin, user: Any, data: Any = None) -> JobForm:
    return JobForm(plugin, data, prefix="new", initial={"timezone": services.user_timezone(user)}, user=user)


def _render_plugin_page(
    request: HttpRequest,
    plugin: Plugin,
    subject: Any,
    *,
    bound: dict[int, JobForm] | None = None,
    new_form: JobForm | None = None,
    status: int = 200,
) -> HttpResponse:
    readonly = subject.pk != request.user.pk
    bound = bound or {}
    jobs = selectors.plugin_jobs(subject, plugin)
    _add_urls(jobs)
    _add_stats(jobs)
    load_error = None
    try:
        for row in jobs:
            row.form = bound.get(row.pk) or _job_form(plugin, row.job, subject, readonly)
            row.config_problem = services.config_problem(row.job) or ""
        if new_form is None and not readonly and plugin.enabled:
            new_form = _new_form(plugin, request.user)
    except PluginLoadError as exc:  # broken plugin code: show the jobs, say why they cannot be edited
        load_error = str(exc)
        for row in jobs:
            row.form = None
        new_form = None
    media = next((r.form.media for r in jobs if r.form), None) or (new_form.media if new_form else None)
    return render(
        request,
        "scheduler_app/plugin.html",
        {
            "plugin": plugin,
            "subject": subject,
            "readonly": readonly,
            "jobs": jobs,
            "new_form": new_form,
            "open_new": bool(new_form is not None and (new_form.is_bound or not jobs)),
            "form_media": media,
            "load_error": load_error,
            "ws_path": f"/ws/logs/{plugin.pk}/{subject.pk}/",
            "tz_options": _zone_options(),
        },
        status=status,
    )


@csp
@login_required
@require_GET
def plugin_page(request: HttpRequest, plugin_id: int, user_id: int | None = None) -> HttpResponse:
    subject = _subject(request, user_id)
    plugin: Plugin = _one_or_404(_PLUGIN.run(plugin_id=plugin_id), "plugin")
    if not plugin.enabled and not Job.objects.filter(user=subject, plugin=plugin).exists():
        raise Http404("no such plugin")
    return _render_plugin_page(request, plugin, subject)


@csp
@login_required
@require_GET
def job_runs(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _visible_job(request, job_id)
    page = selectors.run_history(job, request.GET.get("after"))
    for run in page.runs:
        run.url = id_url("run", run.pk)  # type: ignore[attr-defined]
    return render(
        request,
        "scheduler_app/job_runs.html",
        {
            "job": job,
            "page": page,
            "plugin_url": _plugin_url(job.plugin, job.user, request, job),
            "schedule_words": selectors.schedule_words(job, job.plugin),
        },
    )


@csp
@login_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _visible_run(request, run_id)
    # The tail only: the browser renders these lines with the same code as live ones, and
    # asks for earlier pages (run_log_lines) or downloads the whole log (run_log_download).
    lines, earlier = selectors.run_log_page(run)
    return render(
        request,
        "scheduler_app/run.html",
        {
            "run": run,
            # Users see their plugin's frames only; the whole traceback is the operators' (admin).
            "plugin_traceback": tracebacks.plugin_frames(run.traceback, run.plugin_package),
            "job": run.job,
            "lines": lines,
            "earlier": earlier,
            "first_seq": lines[0]["seq"] if lines else 0,
            "last_line_id": lines[-1]["id"] if lines else 0,
            "ws_path": f"/ws/logs/{run.job.plugin_id}/{run.job.user_id}/",
            "plugin_url": _plugin_url(run.job.plugin, run.job.user, request, run.job),
        },
    )


@login_required
@require_GET
def run_log_lines(request: HttpRequest, run_id: int) -> HttpResponse:
    """``?before=<seq>``: the page of lines before that line, as JSON (the run page's "earlier lines")."""
    run = _visible_run(request, run_id)
    try:
        before = int(request.GET["before"])
    except (KeyError, ValueError):
        return JsonResponse({"error": "before=<line sequence number> is required"}, status=400)
    lines, earlier = selectors.run_log_page(run, before_seq=before)
    return JsonResponse({"lines": lines, "earlier": earlier})


@login_required
@require_GET
def run_log_download(request: HttpRequest, run_id: int) -> StreamingHttpResponse:
    """The whole log as plain text, streamed from the database a chunk at a time."""
    run = _visible_run(request, run_id)
    # An ASGI server consumes an async iterator as a stream but would buffer a sync one
    # whole (and a WSGI server the reverse), so give each the kind it streams.
    chunks = _log_chunks_async(run.pk) if isinstance(request, ASGIRequest) else _log_chunks(run.pk)
    response = StreamingHttpResponse(chunks, content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}.log"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _log_chunks(run_id: int) -> Iterator[bytes]:
    after: int | None = 0
    while after is not None:
        text, after = selectors.log_text_chunk(run_id, after)
        yield text.encode()


async def _log_chunks_async(run_id: int) -> AsyncIterator[bytes]:
    after: int | None = 0
    try:
        while after is not None:
            text, after = await sync_to_async(selectors.log_text_chunk)(run_id, after)
            yield text.encode()
    finally:
        # A long download may outlast the request's own clean-up: release the connection it read with.
        await sync_to_async(close_old_connections)()


# --- actions (POST only, own jobs only, through the service layer) ---------------------------


def _back(request: HttpRequest, job: Job) -> HttpResponseRedirect:
    return HttpResponseRedirect(_plugin_url(job.plugin, request.user, request, job))


@csp
@login_required
@require_POST
def job_create(request: HttpRequest, plugin_id: int) -> HttpResponse:
    plugin = get_object_or_404(Plugin, pk=plugin_id, enabled=True)
    form = _new_form(plugin, request.user, request.POST)
    if form.is_valid():
        try:
            job = services.create_job(
                request.user,
                plugin,
                form.cleaned_data["config"],
                description=form.cleaned_data["description"],
                schedule=form.cleaned_data["job_schedule"],
            )
        except ConfigValidationError as exc:
            form.add_config_errors(exc)
        except ScheduleValidationError as exc:
            form.add_schedule_errors(exc)
        else:
            messages.success(request, f"Saved the new configuration “{job.description or f'job {job.pk}'}”.")
            return _back(request, job)
    messages.error(request, "The new configuration was not saved: please correct the errors below.")
    return _render_plugin_page(request, plugin, request.user, new_form=form, status=400)


@csp
@login_required
@require_POST
def job_save(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _own_job(request, job_id)
    form = _job_form(job.plugin, job, request.user, False, request.POST)
    if form.is_valid():
        try:
            services.update_job(
                job,
                config=form.cleaned_data["config"],
                description=form.cleaned_data["description"],
                schedule=form.cleaned_data["job_schedule"],
            )
        except ConfigValidationError as exc:
            form.add_config_errors(exc)
        except ScheduleValidationError as exc:
            form.add_schedule_errors(exc)
        else:
            if request.POST.get("run_after_save"):
                # "Run now" with unsaved edits: the page saves first, then runs what was saved.
                return _run_now(request, job, saved=True)
            messages.success(request, f"Saved {_label(job)}.")
            return _back(request, job)
    label = _label(job)
    not_run = " (and not run)" if request.POST.get("run_after_save") else ""
    # Upper-case the first letter only: str.capitalize() would lower-case the user's description.
    messages.error(request, f"{label[:1].upper()}{label[1:]} was not saved{not_run}: please correct the errors below.")
    return _render_plugin_page(request, job.plugin, request.user, bound={job.pk: form}, status=400)


def _label(job: Job) -> str:
    return f"“{job.description}”" if job.description else f"job {job.pk}"


@login_required
@require_POST
def job_clone(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _own_job(request, job_id)
    copy = services.clone_job(job)
    messages.success(request, f"Cloned {_label(job)} into {_label(copy)} (inactive).")
    return _back(request, copy)


@login_required
@require_POST
def job_activate(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _own_job(request, job_id)
    try:
        replaced = services.activate_job(job)
    except JobRuleError as exc:
        messages.error(request, str(exc))
    else:
        swapped = "".join(f"; {_label(previous)} is no longer active" for previous in replaced)
        messages.success(request, f"Activated {_label(job)}{swapped}.")
    return _back(request, job)


@login_required
@require_POST
def job_deactivate(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _own_job(request, job_id)
    services.deactivate_job(job)
    messages.success(request, f"Deactivated {_label(job)}: it will not run on schedule.")
    return _back(request, job)


@login_required
@require_POST
def job_run_now(request: HttpRequest, job_id: int) -> HttpResponse:
    return _run_now(request, _own_job(request, job_id))


def _run_now(request: HttpRequest, job: Job, saved: bool = False) -> HttpResponse:
    prefix = f"Saved {_label(job)}. " if saved else ""
    try:
        run = services.run_now(job)
    except JobRuleError as exc:
        if saved:
            messages.success(request, f"Saved {_label(job)}.")
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{prefix}Run #{run.pk} of {_label(job)} queued: its log appears in the live log.")
    return _back(request, job)


@login_required
@require_GET
def run_state(request: HttpRequest, run_id: int) -> JsonResponse:
    """One run's state: the run page's fallback when its live stream missed the end."""
    run = _visible_run(request, run_id)
    return JsonResponse({"run": streams.run_payload(streams.RunSnapshot.of(run))})


@login_required
@require_GET
def jobs_state(request: HttpRequest) -> JsonResponse:
    """The dashboard's live cells: each job's last run and next run (polled every few seconds)."""
    subject = _subject(request)
    jobs: dict[str, Any] = {}
    for row in selectors.dashboard(subject):
        for job in row.jobs:
            run = job.last_run
            if run is not None:
                run.job = job.job  # already loaded: no query per run for the snapshot
            jobs[str(job.pk)] = {
                "active": job.active,
                "next_run": job.next_run.isoformat() if job.next_run else None,
                "interval": job.roll_interval,
                "last_run": {**streams.run_payload(streams.RunSnapshot.of(run)), "url": id_url("run", run.pk)}
                if run
                else None,
            }
    return JsonResponse({"jobs": jobs})


@csp
@login_required
@require_http_methods(["GET", "POST"])
def job_delete(request: HttpRequest, job_id: int) -> HttpResponse:
    job = _own_job(request, job_id)
    if request.method == "POST":
        form = ConfirmDeleteForm(request.POST)
        if form.is_valid():
            plugin = job.plugin
            label = _label(job)
            services.delete_job(job)
            messages.success(request, f"Deleted {label} with its run history.")
            return HttpResponseRedirect(reverse("plugin", args=[plugin.pk]))
    run_count = JobRun.objects.filter(job=job).order_by()[: selectors.HISTORY_COUNT_CAP + 1].count()
    return render(
        request,
        "scheduler_app/job_confirm_delete.html",
        {"job": job, "run_count": run_count, "capped": run_count > selectors.HISTORY_COUNT_CAP},
    )


# --- the schedule preview (the form asks as the user types) -------------------------------------


@login_required
@require_GET
def schedule_preview(request: HttpRequest) -> JsonResponse:
    """The schedule in words and its next five runs, or the field errors (400), as JSON.

    ``?plugin=<id>`` (required), ``&job=<id>`` (an own job: its id fixes an interval's offset),
    ``&schedule=``, ``&timezone=``, ``&jitter_seconds=``. Validation is the service layer's, the
    same as on save; bad input of any kind is a 400 with a message per field, never a 500.
    """
    errors: dict[str, str] = {}
    plugin = job = None
    try:
        plugin = Plugin.objects.filter(pk=int(request.GET.get("plugin", ""))).first()
    except ValueError:
        pass
    if plugin is None:
        return JsonResponse({"errors": {"plugin": "Unknown plugin."}}, status=400)
    if request.GET.get("job"):
        try:
            job = Job.objects.filter(pk=int(request.GET["job"]), user_id=_uid(request), plugin=plugin).first()
        except ValueError:
            job = None
        if job is None:
            return JsonResponse({"errors": {"job": "Unknown job."}}, status=400)
    try:
        jitter = int(request.GET.get("jitter_seconds") or 0)
    except ValueError:
        errors["jitter_seconds"] = "Jitter is a whole number of seconds."
        jitter = 0
    wanted = services.JobSchedule(
        schedule=request.GET.get("schedule", "")[:500],
        timezone=request.GET.get("timezone", "")[:100],
        jitter_seconds=jitter,
    )
    try:
        preview = services.preview_schedule(plugin, wanted, job=job, user=request.user)
    except ScheduleValidationError as exc:
        errors.update(exc.errors)
    except schedules.ScheduleError as exc:  # a valid-looking expression whose slots cannot be found
        errors["schedule"] = str(exc)
    if errors:
        return JsonResponse({"errors": errors}, status=400)
    runs = [{"iso": run.isoformat(), "display": run.strftime(preview.TIME_FORMAT)} for run in preview.next_runs]
    return JsonResponse(
        {
            "description": preview.description,
            "timezone": preview.timezone,
            "approximate": preview.approximate,
            "next_runs": runs,
        }
    )


# --- a run: cancel it, run its job again ---------------------------------------------------------


def _own_run(request: HttpRequest, run_id: int) -> JobRun:
    return get_object_or_404(JobRun.objects.select_related("job__plugin"), pk=run_id, job__user_id=_uid(request))


@login_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _own_run(request, run_id)
    try:
        run = services.cancel_run(run, request.user)
    except JobRuleError as exc:
        messages.error(request, str(exc))
    else:
        if run.status == JobRun.Status.CANCELLED:
            messages.success(request, f"Run #{run.pk} cancelled.")
        else:
            messages.success(request, f"Run #{run.pk}: asked the scheduler to stop it; it ends “cancelled”.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=False):
        back = reverse("run", args=[run.pk])  # only back to a page of this site
    return HttpResponseRedirect(back)


@login_required
@require_POST
def run_again(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _own_run(request, run_id)
    try:
        again = services.run_now(run.job)
    except JobRuleError as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("run", args=[run.pk]))
    messages.success(request, f"Run #{again.pk} of {_label(run.job)} queued.")
    return HttpResponseRedirect(reverse("run", args=[again.pk]))
