"""The plugin host: loads plugin classes by dotted path and calls their hooks.

Every plugin gets its own pluggy ``PluginManager``, so a hook call reaches exactly one
plugin. Loading errors become ``PluginLoadError`` with a message an operator can act on;
config errors become ``ConfigValidationError`` with one entry per offending field.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
from dataclasses import dataclass
from typing import Any

import pluggy
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from scheduler_app import hookspecs
from scheduler_app.contract import PROJECT_NAME, RunContext


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


@dataclass
class LoadedPlugin:
    """A plugin class that loaded: its manager and the instance behind it."""

    package: str
    instance: Any
    manager: pluggy.PluginManager

    def schema(self) -> dict[str, Any]:
        return self.manager.hook.schema()

    def validate(self, raw: dict[str, Any]) -> BaseModel:
        """Validate ``raw`` through the plugin's ``config`` hook (raises ConfigValidationError)."""
        if not isinstance(raw, dict):
            raise ConfigValidationError([FieldError((), "The configuration must be a JSON object.")])
        try:
            model = self.manager.hook.config(raw=raw)
        except ValidationError as exc:
            raise ConfigValidationError.from_pydantic(exc) from exc
        if not isinstance(model, BaseModel):
            raise ConfigValidationError([FieldError((), f"config hook returned {type(model).__name__}, not a model")])
        return model

    def run(self, config: BaseModel, context: RunContext) -> Any:
        """Return the awaitable of one execution (pluggy has no async: the caller awaits it)."""
        results = self.manager.hook.run(config=config, context=context)
        if len(results) != 1:
            raise PluginLoadError(self.package, f"expected one run implementation, found {len(results)}")
        return results[0]


_lock = threading.RLock()
_loaded: dict[str, LoadedPlugin] = {}


def split_package(package: str) -> tuple[str, str]:
    module_name, _, class_name = package.rpartition(".")
    if not module_name or not class_name:
        raise PluginLoadError(package, "expected a dotted path to a class, e.g. plugins.name@v1_0_0.plugin.Plugin")
    return module_name, class_name


def _build(package: str, module: Any, class_name: str) -> LoadedPlugin:
    cls = getattr(module, class_name, None)
    if cls is None:
        raise PluginLoadError(package, f"module {module.__name__} has no class {class_name!r}")
    if not inspect.isclass(cls):
        raise PluginLoadError(package, f"{class_name!r} in {module.__name__} is not a class")
    try:
        instance = cls()
    except Exception as exc:
        raise PluginLoadError(package, f"creating {class_name}() failed: {type(exc).__name__}: {exc}") from exc
    run_impl = getattr(instance, "run", None)
    if run_impl is None:
        raise PluginLoadError(package, "the class has no run hook")
    if not inspect.iscoroutinefunction(run_impl):
        raise PluginLoadError(package, "run must be an async function (async def run(self, config, context))")
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    try:
        manager.register(instance, name=package)
        manager.check_pending()
    except Exception as exc:
        raise PluginLoadError(package, f"hook registration failed: {exc}") from exc
    loaded = LoadedPlugin(package=package, instance=instance, manager=manager)
    try:
        schema = loaded.schema()
    except Exception as exc:
        raise PluginLoadError(package, f"schema hook failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise PluginLoadError(package, "schema hook must return a JSON schema object with type 'object'")
    return loaded


def _import_module(package: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PluginLoadError(package, f"module not found: {exc.name} (looked in {search_path_description()})") from exc
    except SyntaxError as exc:
        raise PluginLoadError(package, f"syntax error in {exc.filename} line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        raise PluginLoadError(package, f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc


def search_path_description() -> str:
    from django.conf import settings

    extra = ", ".join(str(p) for p in settings.MODULE_PATH) or "(none)"
    return f"{settings.PLUGINS_DIR.name}/, MODULE_PATH={extra}"


def ensure_import_paths() -> None:
    """Put MODULE_PATH folders on sys.path so their plugin packages import."""
    from django.conf import settings

    for folder in settings.MODULE_PATH:
        if str(folder) not in sys.path:
            sys.path.append(str(folder))


def get_plugin(package: str) -> LoadedPlugin:
    """Return the loaded plugin for ``package``, importing it on first use."""
    with _lock:
        loaded = _loaded.get(package)
        if loaded is not None:
            return loaded
        ensure_import_paths()
        module_name, class_name = split_package(package)
        module = _import_module(package, module_name)
        loaded = _build(package, module, class_name)
        _loaded[package] = loaded
        return loaded


def forget(package: str) -> None:
    with _lock:
        _loaded.pop(package, None)


def validate_config(package: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Validate ``raw`` for the plugin and return the normalised JSON object to store.

    Secrets are stored as their real value (the JSON dump would mask them).
    """
    model = get_plugin(package).validate(raw)
    return to_storable(model)


def to_storable(model: BaseModel) -> dict[str, Any]:
    def reveal(value: Any) -> Any:
        if isinstance(value, (SecretStr, SecretBytes)):
            secret = value.get_secret_value()
            return secret.decode() if isinstance(secret, bytes) else secret
        return value

    data = model.model_dump(mode="python")
    return _jsonable(data, reveal, model)


def _jsonable(data: Any, reveal: Any, model: BaseModel) -> Any:
    from pydantic_core import to_jsonable_python

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        value = reveal(value)
        return to_jsonable_python(value)

    return convert(data)


def check_reload(package: str) -> LoadedPlugin:
    """Re-import ``package`` in this process; on failure keep the old code and raise.

    (The plugin-system work replaces this with a reload of every module of the plugin.)
    """
    module_name, class_name = split_package(package)
    with _lock:
        ensure_import_paths()
        old = sys.modules.get(module_name)
        try:
            module = importlib.reload(old) if old is not None else _import_module(package, module_name)
        except PluginLoadError:
            raise
        except SyntaxError as exc:
            raise PluginLoadError(package, f"syntax error in {exc.filename} line {exc.lineno}: {exc.msg}") from exc
        except Exception as exc:
            raise PluginLoadError(package, f"re-importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
        loaded = _build(package, module, class_name)
        _loaded[package] = loaded
        return loaded
