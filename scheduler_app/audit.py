"""The audit trail: who changed which job or plugin, when, and through what.

``services.py`` calls ``record`` for every change it makes, so every path (pages, admin,
commands, a shell) is covered by the one module they all go through. *Who* and *through
what* come from a small context: ``AuditContextMiddleware`` sets it for each web request
(the admin or the users' pages, told apart by the path), commands wrap their work in
``acting(via="command")``, fixtures are recognised by Django's ``raw`` saves (``loaddata``),
and anything else -- a shell -- is recorded as ``shell``.

Config diffs mask secret values: a field is secret when the plugin's JSON schema marks it
(``format: password`` / ``writeOnly``, what Pydantic's ``SecretStr`` produces) or its name
says so (password, token, secret, api key). The entry says the secret changed, never to what.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models.signals import post_save
from django.http import HttpRequest, HttpResponse

from scheduler_app.ops_models import AuditEntry

log = logging.getLogger(__name__)

MASK = "••••••"
_SECRET_NAME = re.compile(r"(passw|secret|token|api_?key|private_?key|credential)", re.IGNORECASE)


@dataclass(frozen=True)
class Actor:
    user: Any = None
    via: str = AuditEntry.Via.SHELL


_NOBODY = Actor()
_current: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("audit_actor", default=None)


@contextlib.contextmanager
def acting(user: Any = None, via: str = AuditEntry.Via.SHELL) -> Iterator[None]:
    """Attribute the changes made inside the block to ``user``, through ``via``.

    ``user`` may be the request's lazy user: it is looked at only when a change is recorded,
    so a request that changes nothing (most of them, and static files) loads no session or user.
    """
    token = _current.set(Actor(user, via))
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Actor:
    actor = _current.get() or _NOBODY
    if actor.user is not None and not getattr(actor.user, "is_authenticated", False):
        return Actor(None, actor.via)  # anonymous: nobody to name
    return actor


class AuditContextMiddleware:
    """Every change made while serving a request is the requester's, through the admin or a page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        via = AuditEntry.Via.ADMIN if request.path.startswith("/admin/") else AuditEntry.Via.PAGE
        with acting(getattr(request, "user", None), via):
            return self.get_response(request)


def record(
    action: str,
    summary: str,
    *,
    job: Any = None,
    plugin: Any = None,
    changes: dict[str, Any] | None = None,
    via: str | None = None,
) -> AuditEntry:
    """Write one audit entry for the current actor (call inside the change's transaction)."""
    actor = current()
    user = actor.user
    return AuditEntry.objects.create(
        actor=user,
        actor_name=(user.get_username() if user is not None else "") or "",
        via=via or actor.via,
        action=action,
        job=job if job is not None and job.pk else None,
        job_ref=job.pk if job is not None else None,
        owner_id=job.user_id if job is not None else None,
        plugin=plugin if plugin is not None else (job.plugin if job is not None else None),
        summary=summary[:300],
        changes=changes or {},
    )


# --- config diffs with secrets masked --------------------------------------------------------


def secret_paths(schema: dict[str, Any] | None) -> set[str]:
    """Dotted paths of the fields a JSON schema marks secret (``$ref``s into ``$defs`` followed)."""
    found: set[str] = set()
    if not schema:
        return found
    defs = schema.get("$defs") or schema.get("definitions") or {}

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
            return defs[ref.rsplit("/", 1)[-1]]
        for key in ("anyOf", "allOf", "oneOf"):
            for option in node.get(key) or []:
                if isinstance(option, dict) and option.get("type") != "null":
                    return resolve(option)
        return node

    def walk(node: dict[str, Any], prefix: str, depth: int) -> None:
        if depth > 10:
            return
        for name, prop in (node.get("properties") or {}).items():
            if not isinstance(prop, dict):
                continue
            path = f"{prefix}{name}"
            target = resolve(prop)
            if (
                prop.get("writeOnly")
                or target.get("writeOnly")
                or target.get("format") == "password"
                or prop.get("format") == "password"
            ):
                found.add(path)
            walk(target, f"{path}.", depth + 1)

    walk(resolve(schema), "", 0)
    return found


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty nested objects are leaves."""
    if isinstance(value, dict) and (value or not prefix):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def _is_secret(path: str, secrets: set[str]) -> bool:
    return any(path == s or path.startswith(s + ".") for s in secrets) or bool(_SECRET_NAME.search(path))


def config_diff(
    old: dict[str, Any] | None, new: dict[str, Any] | None, schema: dict[str, Any] | None
) -> dict[str, Any]:
    """``{"config.path": [old, new]}`` for every changed leaf; secrets become ``MASK``."""
    secrets = secret_paths(schema)
    before, after = _flatten(old or {}), _flatten(new or {})
    diff: dict[str, Any] = {}
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        if _is_secret(path, secrets):
            a = MASK if a not in (None, "") else a
            b = MASK if b not in (None, "") else b
        diff[f"config.{path}"] = [a, b]
    return diff


def plugin_schema(package: str, code_version: int | None = None) -> dict[str, Any] | None:
    """The plugin's schema for masking, or None when its code does not load (names still mask)."""
    from scheduler_app import plugin_host

    try:
        return plugin_host.get_plugin(package, code_version).schema()
    except Exception:
        return None


def field_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {name: [old.get(name), value] for name, value in new.items() if old.get(name) != value}


#: Job fields whose changes have their own entries (activation) or are bookkeeping.
_JOB_UNAUDITED = {"id", "user", "plugin", "active", "created_at", "updated_at"}


def job_fields(job: Any) -> dict[str, Any]:
    """A job's audited fields (config kept whole, diffed leaf by leaf by ``config_diff``).

    Every concrete field but the bookkeeping ones, so a field added later (a schedule) is
    audited without touching this module. Values are made JSON-friendly for ``changes``.
    """
    values: dict[str, Any] = {}
    for f in job._meta.concrete_fields:
        if f.name in _JOB_UNAUDITED:
            continue
        value = getattr(job, f.attname)
        values[f.name] = (
            value
            if f.name == "config" or value is None or isinstance(value, (str, int, float, bool, list, dict))
            else str(value)
        )
    return values


# --- fixtures ---------------------------------------------------------------------------------


def _on_raw_save(sender: Any, instance: Any, created: bool, raw: bool, **kwargs: Any) -> None:
    """``loaddata`` saves with ``raw=True`` and bypasses the services: record it here."""
    if not raw:
        return
    from scheduler_app.models import Job, Plugin

    verb = "loaded" if created else "replaced"
    try:
        if isinstance(instance, Job):
            record(
                "job.fixture",
                f"job {instance.pk} {verb} from a fixture",
                job=Job.objects.select_related("plugin").get(pk=instance.pk),
                via=AuditEntry.Via.FIXTURE,
            )
        elif isinstance(instance, Plugin):
            record(
                "plugin.fixture",
                f"plugin {instance.package} {verb} from a fixture",
                plugin=instance,
                via=AuditEntry.Via.FIXTURE,
            )
    except Exception as exc:  # a fixture whose job points at a user loaded later in the file
        log.warning("audit: could not record the fixture's %s %s: %s", type(instance).__name__, instance.pk, exc)


def connect_signals() -> None:
    from scheduler_app.models import Job, Plugin

    post_save.connect(_on_raw_save, sender=Job, dispatch_uid="audit_job_fixture")
    post_save.connect(_on_raw_save, sender=Plugin, dispatch_uid="audit_plugin_fixture")
