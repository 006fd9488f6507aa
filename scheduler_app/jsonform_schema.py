"""Pydantic JSON schema -> django-jsonform schema, and the data/error mapping around it.

django-jsonform 2.23 renders most of what ``BaseModel.model_json_schema()`` emits, but not
all of it (see /work/shared/notes/jsonform-pydantic-facts.md, which these rules follow):

- ``Optional[X]`` (``anyOf: [X, {"type": "null"}]``) becomes ``X`` with ``"x-nullable": true``;
  the widget can only produce ``""`` for an empty input, so :func:`prepare_submission` maps
  ``""`` back to ``None`` for nullable fields. Nullable string enums get an empty choice.
- A bare ``$ref`` property gets a title (otherwise the label is the class name).
- ``dict[str, X]`` objects get ``"properties": {}`` (otherwise the widget refuses the schema).
- ``description`` of a leaf is copied to ``help_text`` (leaves only show help_text);
  ``examples`` become a ``placeholder``.
- ``default_factory`` values (absent from the JSON schema) are filled in from the model.
- Booleans are never ``required`` (an untouched checkbox would be refused) and default to false.
- ``SecretStr`` (``format: password``) loses its default, the mask ``**********``.
- Non-Optional unions keep ``anyOf`` with titled options; union tags that Pydantic puts in
  error locations are stripped by :func:`error_map` so errors land on the right input.

Pydantic stays the authority: django-jsonform's own server validator is never used (it
rejects nulls and demands every key); the form field validates with Pydantic and maps its
errors to the widget's ``error_map`` (keys joined with ``§``).

Public API: :func:`to_jsonform_schema`, :func:`mask_secrets`, :func:`prepare_submission`,
:func:`error_map`, :func:`secret_paths`.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

JOIN_SYMBOL = "§"  # django_jsonform.constants.JOIN_SYMBOL; kept here so this module has no Django import

_LEAF_TYPES = {"string", "integer", "number", "boolean"}
_NULL = {"type": "null"}


def humanize(name: str) -> str:
    """The label Pydantic would generate for a field name: ``opt_s`` -> ``Opt S``."""
    return name.replace("_", " ").strip().title() or name


# --- schema conversion -------------------------------------------------------------------


def to_jsonform_schema(pydantic_schema: dict[str, Any], model: type[BaseModel] | None = None) -> dict[str, Any]:
    """Return a copy of ``pydantic_schema`` that django-jsonform renders and round-trips.

    :param pydantic_schema: what ``Config.model_json_schema()`` (the plugin's ``schema`` hook) returned.
    :param model: the Config class, if known: its ``default_factory`` values become defaults.
    """
    schema = copy.deepcopy(pydantic_schema)
    defs = schema.get("$defs", {})
    if model is not None:
        _apply_factory_defaults(schema, defs, model)
    for name, sub in list(defs.items()):
        defs[name] = _convert(sub, defs)
    converted = _convert({k: v for k, v in schema.items() if k != "$defs"}, defs)
    if defs:
        converted["$defs"] = defs
    converted.setdefault("type", "object")
    if converted.get("type") == "object" and "properties" not in converted and "keys" not in converted:
        converted["properties"] = {}
    return converted


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    """Convert one schema node (and its children); returns the new node."""
    if not isinstance(node, dict):
        return node
    node = _unwrap_optional(node, defs)
    for key in ("anyOf", "oneOf"):
        if key in node:
            node[key] = [_title_option(_convert(option, defs), defs) for option in node[key]]
    if "allOf" in node and len(node["allOf"]) == 1 and set(node) - {"allOf"} <= {"title", "description", "default"}:
        # Older Pydantic wraps a described $ref in allOf; flatten it.
        node = {**node.pop("allOf")[0], **node}
    if "items" in node:
        node["items"] = _convert(node["items"], defs)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _convert(node["additionalProperties"], defs)
    if "properties" in node:
        properties = node["properties"]
        for name, sub in list(properties.items()):
            sub = _convert(sub, defs)
            if "title" not in sub:
                sub["title"] = humanize(name)
            properties[name] = sub
        required = node.get("required")
        if required:
            kept = [name for name in required if not _is_boolean(properties.get(name, {}), defs)]
            for name in set(required) - set(kept):
                properties[name].setdefault("default", False)
            if kept:
                node["required"] = kept
            else:
                node.pop("required")
    if node.get("type") == "object" and "properties" not in node and "keys" not in node:
        node["properties"] = {}
    if node.get("type") == "boolean" and "default" not in node:
        node["default"] = False
    if node.get("format") == "password" or node.get("writeOnly"):
        node.pop("default", None)
    if _is_leaf(node, defs):
        if "description" in node and "help_text" not in node:
            node["help_text"] = node["description"]
        examples = node.get("examples")
        if isinstance(examples, list) and examples and "placeholder" not in node:
            node["placeholder"] = "e.g. " + ", ".join(str(e) for e in examples)
    return node


def _unwrap_optional(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` -> X with x-nullable; ``anyOf: [X, Y, null]`` -> ``anyOf: [X, Y]``."""
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if not isinstance(options, list) or _NULL not in options:
            continue
        rest = [o for o in options if o != _NULL]
        outer = {k: v for k, v in node.items() if k != key}
        if outer.get("default", 0) is None:
            outer.pop("default")
        outer["x-nullable"] = True
        if len(rest) != 1:
            return {**outer, key: rest}
        inner = copy.deepcopy(rest[0])
        target = _resolve(inner, defs)
        if "$ref" in inner and "enum" in target and target.get("type") == "string":
            # Inline a nullable string enum so it can get an empty choice of its own.
            # (without the class name as its title: the property's own label comes later).
            inlined = {k: v for k, v in copy.deepcopy(target).items() if k != "title"}
            inner = {**inlined, **{k: v for k, v in inner.items() if k != "$ref"}}
        merged = {**inner, **outer}
        if "enum" in merged and merged.get("type") == "string":
            merged["choices"] = [{"title": "(none)", "value": ""}] + [
                {"title": str(v), "value": v} for v in merged["enum"]
            ]
            merged.pop("enum")
        return merged
    return node


def _title_option(option: Any, defs: dict[str, Any]) -> Any:
    """Options of a union need titles, or the widget's selector says "Option 1", "Option 2"."""
    if isinstance(option, dict) and "title" not in option:
        target = _resolve(option, defs)
        option["title"] = str(target.get("title") or target.get("type") or "Option")
    return option


def _resolve(node: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref: #/$defs/Name`` (siblings win, as in the widget)."""
    seen = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < 20:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name)
        if not isinstance(target, dict):
            break
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
    return node if isinstance(node, dict) else {}


def _is_boolean(node: dict[str, Any], defs: dict[str, Any]) -> bool:
    return _resolve(node, defs).get("type") == "boolean"


def _is_leaf(node: dict[str, Any], defs: dict[str, Any]) -> bool:
    target = _resolve(node, defs)
    return target.get("type") in _LEAF_TYPES or "enum" in target or "choices" in target


# --- default_factory values -------------------------------------------------------------


def _apply_factory_defaults(schema: dict[str, Any], defs: dict[str, Any], model: type[BaseModel]) -> None:
    """Put each ``default_factory`` value into the schema as a plain ``default``.

    Each model class appears once in the schema (the root or one ``$defs`` entry), so its
    fields' defaults are the same wherever it is used. Object-valued defaults are skipped:
    the widget ignores them (initial data carries them instead).
    """
    from pydantic_core import to_jsonable_python

    by_title = {d.get("title"): d for d in defs.values() if isinstance(d, dict)}
    for cls in _model_classes(model):
        node = schema if cls is model else by_title.get(cls.model_config.get("title") or cls.__name__)
        if not node:
            continue
        properties = node.get("properties", {})
        for name, field in cls.model_fields.items():
            key = field.alias or name
            prop = properties.get(key)
            if prop is None or "default" in prop or field.default_factory is None:
                continue
            try:
                value = field.get_default(call_default_factory=True, validated_data={})
                value = to_jsonable_python(value, fallback=lambda _: None)
            except Exception:  # a factory that needs context simply gets no schema default
                continue
            if not isinstance(value, dict):
                prop["default"] = value


def _model_classes(model: type[BaseModel]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in found:
                return
            found.append(annotation)
            for field in annotation.model_fields.values():
                visit(field.annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(model)
    return found


# --- data going to and coming from the widget -------------------------------------------


def _children(schema: dict[str, Any], node: dict[str, Any], data: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The (key, child schema) pairs of ``data`` under ``node``."""
    defs = schema.get("$defs", {})
    node = _resolve(node, defs)
    if isinstance(data, dict):
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key in data:
            if key in properties:
                yield key, properties[key]
            elif isinstance(extra, dict):
                yield key, extra
    elif isinstance(data, list) and isinstance(node.get("items"), dict):
        for index in range(len(data)):
            yield index, node["items"]


def _transform(
    schema: dict[str, Any], data: Any, leaf: Any, node: dict[str, Any] | None = None, path: tuple = ()
) -> Any:
    """Rebuild ``data``, replacing each value by ``leaf(node, value, path)`` bottom-up."""
    defs = schema.get("$defs", {})
    node = schema if node is None else node
    if isinstance(data, dict):
        children = dict(_children(schema, node, data))
        data = {
            k: _transform(schema, v, leaf, children[k], (*path, k)) if k in children else v for k, v in data.items()
        }
    elif isinstance(data, list):
        children = dict(_children(schema, node, data))
        data = [
            _transform(schema, v, leaf, children[i], (*path, i)) if i in children else v for i, v in enumerate(data)
        ]
    return leaf(_resolve(node, defs), data, path)


def _is_secret(node: dict[str, Any]) -> bool:
    return node.get("format") == "password" or bool(node.get("writeOnly"))


def secret_paths(schema: dict[str, Any], data: Any) -> list[tuple[Any, ...]]:
    """The paths in ``data`` whose schema says they are secrets (``format: password``)."""
    found: list[tuple[Any, ...]] = []

    def leaf(node: dict[str, Any], value: Any, path: tuple) -> Any:
        if _is_secret(node):
            found.append(path)
        return value

    _transform(schema, data, leaf)
    return found


KEEP_SECRET_HINT = "Leave empty to keep the saved value."


def hint_kept_secrets(schema: dict[str, Any], stored: Any) -> dict[str, Any]:
    """Add "leave empty to keep" help text to the secret inputs that have a value in ``stored``.

    A secret with nothing saved gets no hint: there is nothing to keep. The schema is changed in
    place; the hint goes on the schema node, so the items of an array of secrets share it.
    """
    kept: dict[int, dict[str, Any]] = {}

    def leaf(node: dict[str, Any], value: Any, path: tuple) -> Any:
        if _is_secret(node) and value not in (None, ""):
            kept[id(node)] = node
        return value

    _transform(schema, stored, leaf)
    for node in kept.values():
        text = node.get("help_text", "")
        node["help_text"] = f"{text} {KEEP_SECRET_HINT}".strip()
    return schema


def mask_secrets(schema: dict[str, Any], data: Any) -> Any:
    """``data`` with every secret blanked: what may be sent to the browser."""

    def leaf(node: dict[str, Any], value: Any, path: tuple) -> Any:
        return "" if _is_secret(node) and value not in (None,) else value

    return _transform(schema, data, leaf)


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        if isinstance(data, dict) and key in data:
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def prepare_submission(schema: dict[str, Any], data: Any, stored: Any = None) -> Any:
    """Turn what the widget submitted into what Pydantic should validate.

    - ``""`` in a nullable (Optional) field becomes ``None``.
    - A blank secret means "unchanged": the value at the same place in ``stored`` is kept.
    """

    def leaf(node: dict[str, Any], value: Any, path: tuple) -> Any:
        if _is_secret(node) and value in ("", None):
            previous = _get(stored, path)
            if isinstance(previous, str) and previous:
                return previous
        if node.get("x-nullable") and value == "":
            return None
        return value

    return _transform(schema, data, leaf)


# --- errors ------------------------------------------------------------------------------


def widget_path(schema: dict[str, Any], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Split a Pydantic error location into (path of a widget input, the rest).

    Union tags (``('u', 'int')``) and ``[key]`` markers are dropped; a location the widget
    has no input for (an unknown key) stops at the nearest input above it, and the rest is
    returned so the message can name it.
    """
    defs = schema.get("$defs", {})
    node: dict[str, Any] = schema
    path: list[Any] = []
    items = list(loc)
    while items:
        node = _resolve(node, defs)
        key = items[0]
        options = node.get("anyOf") or node.get("oneOf")
        if isinstance(options, list) and options:
            # Pydantic names the union member it tried; the widget's coordinates do not.
            items.pop(0)
            node = _pick_option(options, key, items[0] if items else None, defs)
            continue
        if key == "[key]":
            items.pop(0)
            continue
        properties = node.get("properties", {})
        if isinstance(key, str) and key in properties:
            node = properties[key]
        elif isinstance(key, str) and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif isinstance(key, int) and isinstance(node.get("items"), dict):
            node = node["items"]
        else:
            break
        path.append(items.pop(0))
    return tuple(path), tuple(items)


def _pick_option(options: list[Any], tag: Any, next_key: Any, defs: dict[str, Any]) -> dict[str, Any]:
    resolved = [_resolve(o, defs) for o in options]
    for option, target in zip(options, resolved, strict=True):
        ref = option.get("$ref", "") if isinstance(option, dict) else ""
        if tag in (target.get("title"), target.get("type"), ref.rsplit("/", 1)[-1]):
            return option
    for option, target in zip(options, resolved, strict=True):
        if isinstance(next_key, str) and next_key in target.get("properties", {}):
            return option
        if isinstance(next_key, int) and target.get("type") == "array":
            return option
    return {}


def error_map(schema: dict[str, Any], errors: list[tuple[tuple[Any, ...], str]]) -> dict[str, list[str]]:
    """Map ``(loc, message)`` pairs from Pydantic to django-jsonform's ``error_map``.

    Keys are widget coordinates joined with ``§`` (``""`` is the whole form).
    """
    result: dict[str, list[str]] = {}
    for loc, message in errors:
        path, rest = widget_path(schema, tuple(loc))
        if rest:
            message = f"{'.'.join(str(p) for p in rest)}: {message}"
        key = JOIN_SYMBOL.join(str(p) for p in path)
        bucket = result.setdefault(key, [])
        if message not in bucket:
            bucket.append(message)
    return result
