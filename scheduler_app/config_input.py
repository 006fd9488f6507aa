"""What a job config may contain before any plugin looks at it: JSON every database stores.

Every path that stores a config (the users' pages, the admin, fixtures, the shell through
``services``) passes here first, through ``services.validate_config``; the form field parses
submitted text with ``parse_config_text``. The limits exist because the input would
otherwise reach a server error instead of a field error:

- nesting deeper than ``MAX_DEPTH``: Python's JSON parser and every recursive walk after it
  (Pydantic, the widget's helpers) hit ``RecursionError`` near 1,000 levels;
- integers outside 64 bits: Python refuses to parse more than 4,300 digits (``ValueError``),
  databases' JSON functions and the browser's widget cannot represent them anyway;
- ``NaN`` and ``Infinity``: Python's parser accepts them, JSON and PostgreSQL's ``jsonb`` do not;
- NUL (``\\u0000``) in a string or key: PostgreSQL's ``jsonb`` rejects it (``DataError``);
- a lone surrogate (``\\ud800``): not a character, so neither UTF-8 nor ``jsonb`` can hold it;
- more than ``MAX_VALUES`` values in all: a config is settings, not a data set.

The rule applies on SQLite too, so a config that saves in development saves in production.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from scheduler_app.plugin_host import ConfigValidationError, FieldError

__all__ = ["MAX_DEPTH", "MAX_INT", "MAX_VALUES", "check_storable", "parse_config_text"]

MAX_DEPTH = 32
MAX_INT = 2**63 - 1
MAX_VALUES = 10_000
# Longest integer literal that can be within MAX_INT: a sign and 19 digits.
_MAX_INT_DIGITS = 20
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


class _Refused(ValueError):
    """Raised from the parser's hooks; carries the message for the person who typed it."""


def _parse_int(text: str) -> int:
    if len(text) > _MAX_INT_DIGITS or abs(int(text)) > MAX_INT:
        raise _Refused(f"The number {text[:12]}… is too large: integers must lie within ±{MAX_INT}.")
    return int(text)


def _parse_constant(text: str) -> float:
    raise _Refused(f"{text} is not a JSON number; use a finite number.")


def parse_config_text(text: str) -> Any:
    """Parse submitted config text; raise ConfigValidationError with a readable reason."""
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except _Refused as exc:
        raise _error((), str(exc)) from None
    except RecursionError:
        raise _error((), f"The configuration is nested too deeply (at most {MAX_DEPTH} levels).") from None
    except json.JSONDecodeError as exc:
        raise _error((), f"Enter valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).") from None
    except ValueError as exc:  # any other refusal of the parser, e.g. a float it cannot convert
        raise _error((), f"Enter valid JSON ({exc}).") from None


def check_storable(value: Any) -> None:
    """Raise ConfigValidationError (naming where) if ``value`` is not JSON every database stores."""
    errors: list[FieldError] = []
    count = 0
    # Iterative on purpose: a recursive walk is what breaks on deep input.
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise _error((), f"The configuration holds more than {MAX_VALUES} values.")
        if len(loc) > MAX_DEPTH:
            raise _error(loc[:MAX_DEPTH], f"The configuration is nested too deeply (at most {MAX_DEPTH} levels).")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    errors.append(FieldError(loc, f"Keys must be strings, not {type(key).__name__}."))
                    continue
                problem = _string_problem(key)
                if problem:
                    errors.append(FieldError(loc, f"A key {problem}."))
                    continue
                stack.append(((*loc, key), child))
        elif isinstance(item, (list, tuple)):
            stack.extend(((*loc, index), child) for index, child in enumerate(item))
        elif isinstance(item, str):
            problem = _string_problem(item)
            if problem:
                errors.append(FieldError(loc, f"The text {problem}."))
        elif isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int):
            if abs(item) > MAX_INT:
                errors.append(FieldError(loc, f"Integers must lie within ±{MAX_INT}."))
        elif isinstance(item, float):
            if not math.isfinite(item):
                errors.append(FieldError(loc, "Use a finite number (not NaN or Infinity)."))
        else:
            errors.append(FieldError(loc, f"{type(item).__name__} is not a JSON value."))
    if errors:
        raise ConfigValidationError(errors)


def _string_problem(text: str) -> str | None:
    match = _BAD_CHARS.search(text)
    if match is None:
        return None
    if match.group() == "\x00":
        return "contains a NUL character (\\u0000), which cannot be stored"
    return f"contains an unpaired surrogate (\\u{ord(match.group()):04x}), which is not a character"


def _error(loc: tuple[str | int, ...], message: str) -> ConfigValidationError:
    return ConfigValidationError([FieldError(loc, message)])
