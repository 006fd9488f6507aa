"""The plugin host: finds plugins, loads plugin classes by dotted path, reloads them, calls their hooks.

API (stable: the engine, services, admin, forms and commands use it):

- ``get_plugin(package, code_version=None) -> LoadedPlugin``: the loaded plugin, imported on
  first use. With ``code_version`` (``Plugin.code_version``), a plugin loaded for an older
  version is reloaded first; if that reload fails the old code keeps serving, the error is
  logged and kept in ``LoadedPlugin.reload_error`` (one attempt per version).
- ``reload(package) -> LoadedPlugin``: re-import every module of the plugin's folder (fresh
  module objects) and rebuild; on any failure ``sys.modules`` and the loaded plugin are
  restored, so the old code keeps running, and ``PluginLoadError`` is raised.
  ``check_reload`` is the same (services.reload_plugin calls it before bumping code_version).
- ``check_package(package) -> None``: raise ``PluginLoadError`` if the package does not load
  (the admin's Plugin form uses it).
- ``discover() -> list[AvailablePlugin]``: every plugin that could be registered: folders
  ``name@vX_Y_Z/plugin.py`` in the repo's ``plugins/`` and in each ``MODULE_PATH`` folder,
  and installed distributions' ``jobscheduler`` entry points (``name = "module:Class"``).
  Broken ones are listed too, with ``error`` set.
- ``validate_config(package, raw) -> dict``: Pydantic-validated config, ready to store.
- ``LoadedPlugin.validate(raw) -> BaseModel``, ``LoadedPlugin.run(config, context)`` (an
  awaitable: pluggy has no async), ``LoadedPlugin.schema()``.

Every plugin gets its own pluggy ``PluginManager``, so a hook call reaches exactly one
plugin. Loading errors become ``PluginLoadError`` with a message an operator can act on
(package, what failed, file and line, where it looked); config errors become
``ConfigValidationError`` with one entry per offending field.

All state is behind one re-entrant lock, for the threads of web processes and commands. The
scheduler engine never calls in from its event loop: its registry (``engine/registry.py``,
one object per engine) calls ``get_plugin`` from its own loader thread and keeps the outcome
per code version for the loop. ``JOBSCHEDULER_TRACE_PLUGINS=1`` logs every hook call (logger
``scheduler_app.plugins.trace``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pluggy
from pluggy import HookImpl, Result
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from scheduler_app import hookspecs, secretbox
from scheduler_app.contract import PROJECT_NAME, RunContext

logger = logging.getLogger("scheduler_app.plugins")
trace_logger = logging.getLogger("scheduler_app.plugins.trace")

#: The entry-point group installed distributions register their plugin classes in.
ENTRY_POINT_GROUP = PROJECT_NAME
#: A plugin folder: ``name@vX_Y_Z`` (the version is optional for MODULE_PATH folders).
FOLDER_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:@v(?P<version>\d+(?:_\d+)*))?$")


class PluginLoadError(Exception):
    """A plugin's code could not be loaded; the message names the package and what failed."""

    def __init__(self, package: str, reason: str) -> None:
        super().__init__(f"{package}: {reason}")
        self.package = package
        self.reason = reason


@dataclass(frozen=True)
class FieldError:
    loc: tuple[str | int, ...]
    message: str


class ConfigValidationError(Exception):
    """A configuration failed the plugin's validation; ``errors`` say where and why."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc)) or 'config'}: {e.message}" for e in errors))

    @classmethod
    def from_pydantic(cls, exc: ValidationError) -> ConfigValidationError:
        return cls([FieldError(tuple(err["loc"]), err["msg"]) for err in exc.errors()])


def require_object(raw: Any) -> dict[str, Any]:
    """A configuration is a JSON object before any plugin sees it (raises ConfigValidationError)."""
    if not isinstance(raw, dict):
        raise ConfigValidationError([FieldError((), "The configuration must be a JSON object.")])
    return raw


@dataclass
class LoadedPlugin:
    """A plugin class that loaded: its manager and the instance behind it."""

    package: str
    instance: Any
    manager: pluggy.PluginManager
    #: The ``Plugin.code_version`` this code was loaded for (0: not told).
    code_version: int = 0
    #: Why the last reload (for a newer code_version) failed; the code above still serves.
    reload_error: str = ""
    #: the single plain ``run`` implementation and the arguments it takes (False: call the hook)
    _run_impl: tuple[Callable[..., Any], tuple[str, ...]] | Literal[False] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def config_model(self) -> type[BaseModel] | None:
        model = getattr(self.instance, "Config", None)
        return model if isinstance(model, type) and issubclass(model, BaseModel) else None

    @property
    def title(self) -> str:
        return str(getattr(self.instance, "title", "") or "")

    @property
    def description(self) -> str:
        text = getattr(self.instance, "description", "") or inspect.getdoc(type(self.instance)) or ""
        return str(text).strip()

    def schema(self) -> dict[str, Any]:
        return self.manager.hook.schema()

    def validate(self, raw: dict[str, Any]) -> BaseModel:
        """Validate ``raw`` through the plugin's ``config`` hook (raises ConfigValidationError)."""
        require_object(raw)
        try:
            raw = secretbox.reveal(raw)  # stored secrets are encrypted; the plugin gets the value
        except secretbox.SecretDecryptError as exc:
            raise ConfigValidationError([FieldError((), str(exc))]) from exc
        try:
            model = self.manager.hook.config(raw=raw)
        except ValidationError as exc:
            raise ConfigValidationError.from_pydantic(exc) from exc
        if not isinstance(model, BaseModel):
            raise ConfigValidationError([FieldError((), f"config hook returned {type(model).__name__}, not a model")])
        return model

    def run(self, config: BaseModel, context: RunContext) -> Any:
        """Return the awaitable of one execution (pluggy has no async: the caller awaits it).

        A plugin with one plain ``run`` implementation (no wrappers: every plugin this host
        loads) has it called directly, with the arguments it names, as pluggy would: the hook
        call's own work (defaults, argument checks, a results list) was a tenth of a run's
        cost on the loop. A traced plugin (``JOBSCHEDULER_TRACE_PLUGINS``) goes through the hook."""
        if self._run_impl is None:
            impls = self.manager.hook.run.get_hookimpls()
            plain = len(impls) == 1 and not (impls[0].hookwrapper or impls[0].wrapper)
            self._run_impl = (impls[0].function, tuple(impls[0].argnames)) if plain else False
        if self._run_impl is not False:
            function, argnames = self._run_impl
            given = {"config": config, "context": context}
            result = function(*[given[name] for name in argnames])
            results = [] if result is None else [result]
        else:
            results = self.manager.hook.run(config=config, context=context)
        if len(results) != 1:
            raise PluginLoadError(self.package, f"expected one run implementation, found {len(results)}")
        return results[0]


def immutable_config(model: BaseModel) -> bool:
    """Whether runs may share one validated config: nothing a run does to it can change it.

    A frozen model, or one with no fields that takes no extra ones (the common "no settings"
    plugin). Any other model is validated anew for each run, so a run that changes its config
    in place never shows the change to the next run.
    """
    model_config = type(model).model_config
    if model_config.get("frozen"):
        return True
    return not type(model).model_fields and model_config.get("extra") != "allow"


@dataclass(frozen=True)
class AvailablePlugin:
    """A plugin that could be registered: where it was found and whether it loads."""

    package: str
    name: str
    version: str = ""
    title: str = ""
    description: str = ""
    #: ``plugins/``, ``MODULE_PATH /some/folder`` or ``entry point <dist> <version>``.
    source: str = ""
    #: Why it does not load; empty when it does.
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


_lock = threading.RLock()
_loaded: dict[str, LoadedPlugin] = {}


# --- names and paths ---------------------------------------------------------------------


def split_package(package: str) -> tuple[str, str]:
    module_name, _, class_name = package.rpartition(".")
    if not module_name or not class_name:
        raise PluginLoadError(package, "expected a dotted path to a class, e.g. plugins.name@v1_0_0.plugin.Plugin")
    return module_name, class_name


def plugin_root(module_name: str) -> str:
    """The package that holds all of a plugin's modules: what a reload re-imports.

    ``plugins.sample@v0_1_0.plugin`` -> ``plugins.sample@v0_1_0``: the nearest versioned
    folder (``name@vX_Y_Z``), wherever it is; otherwise (an installed distribution, an
    unversioned MODULE_PATH folder) the top-level package.
    """
    parts = module_name.split(".")
    for index, part in enumerate(parts):
        if "@v" in part:
            return ".".join(parts[: index + 1])
    if parts[0] == "plugins" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def version_from_folder(folder: str) -> str:
    """``sample_plugin@v0_1_0`` -> ``0.1.0`` (empty when the folder has no version)."""
    match = FOLDER_RE.match(folder)
    return match.group("version").replace("_", ".") if match and match.group("version") else ""


def search_path_description() -> str:
    """Where plugins are looked for, for error messages."""
    from django.conf import settings

    extra = os.pathsep.join(str(p) for p in settings.MODULE_PATH) or "(none)"
    return f"{settings.PLUGINS_DIR}/, MODULE_PATH={extra}, entry points '{ENTRY_POINT_GROUP}'"


def ensure_import_paths() -> None:
    """Make the repo's ``plugins`` package and the MODULE_PATH folders importable."""
    from django.conf import settings

    base = str(Path(settings.PLUGINS_DIR).parent)
    if base not in sys.path:
        sys.path.append(base)
    for folder in settings.MODULE_PATH:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))


# --- loading -----------------------------------------------------------------------------


def _tracing_enabled() -> bool:
    return os.environ.get("JOBSCHEDULER_TRACE_PLUGINS", "").lower() in {"1", "true", "yes", "on"}


def _build(package: str, module: Any, class_name: str) -> LoadedPlugin:
    cls = getattr(module, class_name, None)
    if cls is None:
        candidates = [name for name, obj in vars(module).items() if _is_plugin_class(obj, module)]
        hint = f"; plugin classes there: {', '.join(candidates)}" if candidates else ""
        where = getattr(module, "__file__", module.__name__)
        raise PluginLoadError(package, f"module {module.__name__} ({where}) has no class {class_name!r}{hint}")
    if not inspect.isclass(cls):
        raise PluginLoadError(package, f"{class_name!r} in {module.__name__} is not a class")
    return _build_class(package, cls)


def load_class(cls: type, package: str | None = None) -> LoadedPlugin:
    """Build a plugin from a class object (not cached): for tests and tools."""
    return _build_class(package or f"{cls.__module__}.{cls.__qualname__}", cls)


def _build_class(package: str, cls: type) -> LoadedPlugin:
    class_name = cls.__name__
    try:
        instance = cls()
    except Exception as exc:
        raise PluginLoadError(package, f"creating {class_name}() failed: {type(exc).__name__}: {exc}") from exc
    run_impl = getattr(instance, "run", None)
    if run_impl is None:
        raise PluginLoadError(package, "the class has no run hook (async def run(self, config, context))")
    if not inspect.iscoroutinefunction(run_impl):
        where = _where(run_impl)
        raise PluginLoadError(package, f"run must be an async function: write 'async def run(...)'{where}")
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    try:
        manager.register(instance, name=package)
        manager.check_pending()
    except Exception as exc:
        raise PluginLoadError(package, f"hook registration failed: {exc}") from exc
    traced = _tracing_enabled()
    if traced:
        _trace(manager, package)
    loaded = LoadedPlugin(package=package, instance=instance, manager=manager)
    if traced:
        loaded._run_impl = False  # every run through the hook call, so the trace shows it
    _check_schema(loaded)
    return loaded


def _where(func: Any) -> str:
    try:
        return f" ({inspect.getsourcefile(func)} line {inspect.getsourcelines(func)[1]})"
    except (OSError, TypeError):
        return ""


def _check_schema(loaded: LoadedPlugin) -> None:
    """A schema the form cannot use is a load error, found now rather than in a user's page."""
    from scheduler_app.jsonform_schema import to_jsonform_schema

    package = loaded.package
    try:
        schema = loaded.schema()
    except Exception as exc:
        raise PluginLoadError(package, f"invalid schema: the schema hook failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise PluginLoadError(package, "invalid schema: the schema hook must return a JSON schema with type 'object'")
    try:
        json.dumps(schema)
        to_jsonform_schema(schema, loaded.config_model)
    except Exception as exc:
        raise PluginLoadError(package, f"invalid schema: {type(exc).__name__}: {exc}") from exc


def _trace(manager: pluggy.PluginManager, package: str) -> None:
    def before(hook_name: str, hook_impls: Sequence[HookImpl], kwargs: Mapping[str, Any]) -> None:
        trace_logger.info("%s: %s(%s)", package, hook_name, ", ".join(sorted(kwargs)))

    def after(outcome: Result[Any], hook_name: str, hook_impls: Sequence[HookImpl], kwargs: Mapping[str, Any]) -> None:
        exc = outcome.exception
        trace_logger.info("%s: %s -> %s", package, hook_name, f"raised {exc!r}" if exc else "ok")

    manager.add_hookcall_monitoring(before, after)


def _is_plugin_class(obj: Any, module: Any) -> bool:
    from scheduler_app.contract import JobPlugin

    return (
        inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and (issubclass(obj, JobPlugin) or hasattr(obj, "run"))
        and obj is not JobPlugin
    )


def _import_module(package: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        if module_name == missing or module_name.startswith(missing + "."):
            raise PluginLoadError(
                package, f"module not found: {module_name} (looked in {search_path_description()})"
            ) from exc
        raise PluginLoadError(
            package, f"importing {module_name} failed: it imports {missing!r}, not installed"
        ) from exc
    except SyntaxError as exc:
        raise PluginLoadError(package, f"syntax error in {exc.filename} line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        where = _traceback_location(exc)
        raise PluginLoadError(package, f"importing {module_name} failed: {type(exc).__name__}: {exc}{where}") from exc


def _traceback_location(exc: BaseException) -> str:
    """`` (file line N)`` of the innermost frame, so an operator knows where to look."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return ""
    return f" ({last.tb_frame.f_code.co_filename} line {last.tb_lineno})"


def get_plugin(package: str, code_version: int | None = None) -> LoadedPlugin:
    """Return the loaded plugin for ``package``, importing it on first use.

    With ``code_version``: a plugin loaded for an older version is reloaded first (one
    attempt per version; on failure the old code is returned and the error logged). Every
    caller that has the ``Plugin`` row should pass it (services and forms do), so a process
    that missed a reload notification (a web worker) still runs and validates the new code.
    """
    with _lock:
        loaded = _loaded.get(package)
        if loaded is None:
            ensure_import_paths()
            module_name, class_name = split_package(package)
            module = _import_module(package, module_name)
            loaded = _build(package, module, class_name)
            loaded.code_version = code_version or 0
            _loaded[package] = loaded
            return loaded
        # Version 1 means "never reloaded": code loaded without a version (0) is that code.
        if code_version is not None and code_version > max(loaded.code_version, 1):
            try:
                loaded = reload(package)
            except PluginLoadError as exc:
                logger.error(
                    "reloading %s for code version %s failed, the old code keeps running: %s",
                    package,
                    code_version,
                    exc.reason,
                )
                loaded.reload_error = str(exc)
            loaded.code_version = code_version
        return loaded


def check_package(package: str) -> None:
    """Raise PluginLoadError if ``package`` does not load (for the admin's Plugin form)."""
    get_plugin(package.strip())


def loaded_packages() -> dict[str, LoadedPlugin]:
    with _lock:
        return dict(_loaded)


def forget(package: str) -> None:
    with _lock:
        _loaded.pop(package, None)


# --- reloading ---------------------------------------------------------------------------


def _plugin_modules(root: str) -> dict[str, Any]:
    return {name: mod for name, mod in sys.modules.items() if name == root or name.startswith(root + ".")}


def _drop_bytecode(modules: dict[str, Any]) -> None:
    """Delete cached bytecode of the plugin's files.

    The .pyc check compares the source's mtime in whole seconds and its size, so an edit
    made within the same second that keeps the size would otherwise reload the old code.
    """
    folders = set()
    for mod in modules.values():
        for entry in list(getattr(mod, "__path__", []) or []):
            folders.add(Path(entry))
        if getattr(mod, "__file__", None):
            folders.add(Path(mod.__file__).parent)
    for folder in folders:
        for source in folder.rglob("*.py"):
            try:
                Path(importlib.util.cache_from_source(str(source))).unlink(missing_ok=True)
            except (OSError, NotImplementedError, ValueError):
                pass


def reload(package: str) -> LoadedPlugin:
    """Re-import every module of the plugin's folder and rebuild it; on failure keep the old code.

    Fresh module objects are created (not ``importlib.reload``), so runs still executing the
    old code keep their module intact. Other packages loaded from the same folder are
    rebuilt lazily on their next ``get_plugin``.
    """
    module_name, class_name = split_package(package)
    root = plugin_root(module_name)
    with _lock:
        ensure_import_paths()
        old_modules = _plugin_modules(root)
        _drop_bytecode(old_modules)
        for name in old_modules:
            del sys.modules[name]
        importlib.invalidate_caches()
        try:
            module = _import_module(package, module_name)
            loaded = _build(package, module, class_name)
        except BaseException:
            for name in _plugin_modules(root):
                del sys.modules[name]
            sys.modules.update(old_modules)
            raise
        previous = _loaded.get(package)
        loaded.code_version = previous.code_version if previous else 0
        for other in [p for p in _loaded if p != package and plugin_root(split_package(p)[0]) == root]:
            del _loaded[other]
        _loaded[package] = loaded
        logger.info("reloaded %s", package)
        return loaded


def check_reload(package: str) -> LoadedPlugin:
    """Reload ``package`` in this process (raise PluginLoadError, old code kept, if it fails)."""
    return reload(package)


def mark_version(package: str, code_version: int) -> None:
    """Record that the loaded code already is ``code_version`` (after a reload in this process)."""
    with _lock:
        loaded = _loaded.get(package)
        if loaded is not None and code_version > loaded.code_version:
            loaded.code_version = code_version


# --- configs -----------------------------------------------------------------------------


def validate_config(package: str, raw: dict[str, Any], code_version: int | None = None) -> dict[str, Any]:
    """Validate ``raw`` for the plugin and return the normalised JSON object to store.

    ``code_version`` (``Plugin.code_version``) makes a process that missed a reload (a web
    worker) pick the new code up first. Secrets come out encrypted (``secretbox``), ready to store.
    """
    model = get_plugin(package, code_version).validate(raw)
    return to_storable(model)


def to_storable(model: BaseModel) -> dict[str, Any]:
    from pydantic_core import to_jsonable_python

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, (SecretStr, SecretBytes)):
            secret = value.get_secret_value()
            return secretbox.seal(secret.decode() if isinstance(secret, bytes) else secret)
        return to_jsonable_python(value)

    return convert(model.model_dump(mode="python", by_alias=True))


# --- discovery ---------------------------------------------------------------------------


@dataclass
class _Candidate:
    package: str
    name: str
    version: str
    source: str
    error: str = ""


def _folder_candidates(base: Path, prefix: str, source: str) -> list[_Candidate]:
    found: list[_Candidate] = []
    if not base.is_dir():
        return found
    for folder in sorted(base.iterdir()):
        match = FOLDER_RE.match(folder.name)
        if not folder.is_dir() or not match or not (folder / "plugin.py").is_file():
            continue
        module_name = f"{prefix}{folder.name}.plugin"
        found.append(
            _Candidate(
                package=f"{module_name}.{_class_name_in(folder / 'plugin.py')}",
                name=match.group("name"),
                version=version_from_folder(folder.name),
                source=source,
            )
        )
    return found


def _class_name_in(path: Path) -> str:
    """The plugin class's name in a plugin.py, read without importing (``Plugin`` by default)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "Plugin"
    if re.search(r"^class Plugin\b", text, re.MULTILINE):
        return "Plugin"
    match = re.search(r"^class (\w+)\((?:[\w.]*\.)?JobPlugin\)", text, re.MULTILINE)
    return match.group(1) if match else "Plugin"


def _entry_point_candidates() -> list[_Candidate]:
    found: list[_Candidate] = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_label = f"{dist.name} {dist.version}" if dist is not None else "?"
        module, _, attr = ep.value.partition(":")
        if not attr:
            found.append(_Candidate(ep.value, ep.name, "", f"entry point {dist_label}", "expected 'module:Class'"))
            continue
        found.append(
            _Candidate(
                package=f"{module.strip()}.{attr.strip()}",
                name=ep.name,
                version=dist.version if dist is not None else "",
                source=f"entry point {dist_label}",
            )
        )
    return found


def discover() -> list[AvailablePlugin]:
    """Every plugin that could be registered, loaded to check it; broken ones carry ``error``."""
    from django.conf import settings

    ensure_import_paths()
    candidates = _folder_candidates(Path(settings.PLUGINS_DIR), "plugins.", "plugins/")
    for folder in settings.MODULE_PATH:
        candidates += _folder_candidates(Path(folder), "", f"MODULE_PATH {folder}")
    candidates += _entry_point_candidates()
    result: list[AvailablePlugin] = []
    seen: set[str] = set()
    for cand in candidates:
        if cand.package in seen:
            continue
        seen.add(cand.package)
        title = description = ""
        error = cand.error
        if not error:
            try:
                loaded = get_plugin(cand.package)
                title, description = loaded.title, loaded.description
            except PluginLoadError as exc:
                error = exc.reason
            except Exception as exc:  # discovery lists, it never crashes the page or command
                error = f"{type(exc).__name__}: {exc}"
        result.append(
            AvailablePlugin(
                package=cand.package,
                name=cand.name,
                version=cand.version,
                title=title or cand.name,
                description=description,
                source=cand.source,
                error=error,
            )
        )
    return result
