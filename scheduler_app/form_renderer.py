"""The form renderer of the users' job forms: the plain ``<input>`` widgets written in Python.

Django renders every widget through its template (``django/forms/widgets/text.html`` includes
``input.html``, which includes ``attrs.html``): three template renders, a context stack and a
variable lookup per attribute, for one ``<input>`` tag. The plugin page renders ~8 widgets per
job form, and cProfile put those widget templates at about a third of the page's CPU.
:class:`PageFormRenderer` writes the same tag directly for the input widgets whose templates are
exactly ``input.html`` (the text, number, email, url, password and hidden inputs), with the same
escaping and the same rules as the templates (``{% if widget.value != None %}``, attributes that
are ``False`` left out, ``True`` written bare, values through ``stringformat:'s'``). Everything
else (other widgets, error lists, labels) goes through Django's templates as before, and so does
any widget whose values are not plain strings, numbers or booleans (a template would call a
callable, a lazy string would be translated: not worth reproducing).

``tests/test_page_rendering.py`` compares its output with Django's renderer, widget by widget.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from html import escape
from typing import Any

from django.forms.renderers import DjangoTemplates
from django.utils.safestring import SafeData, SafeString, mark_safe

#: The widget templates that are only ``{% include "django/forms/widgets/input.html" %}``.
INPUT_TEMPLATES = frozenset(
    f"django/forms/widgets/{name}.html" for name in ("input", "text", "number", "email", "url", "password", "hidden")
)

_PLAIN = (str, int, float)  # bool is an int


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, _PLAIN)


def _variable(value: str) -> str:
    """``{{ value }}`` for a string, autoescaped (a str is not localized)."""
    return str(value) if isinstance(value, SafeData) else escape(value)  # as django.utils.html.escape


def _stringformat(value: Any) -> str:
    """``{{ value|stringformat:'s' }}`` (``"%s" % value``), escaped unless the value was safe."""
    if isinstance(value, SafeData):
        return str(value)
    # str() is "%s" for the plain types allowed here; django.utils.html.escape is html.escape
    # behind a lazy-text wrapper that costs more than the escaping.
    return escape(str(value))


def _input(context: dict[str, Any]) -> str | None:
    """``django/forms/widgets/input.html`` (and ``attrs.html``), or None to use the template."""
    widget = context.get("widget")
    if not isinstance(widget, dict) or len(context) != 1:
        return None
    kind, name, value, attrs = widget.get("type"), widget.get("name"), widget.get("value"), widget.get("attrs")
    if not (isinstance(kind, str) and isinstance(name, str) and _plain(value) and isinstance(attrs, dict)):
        return None
    if not all(isinstance(key, str) and _plain(item) for key, item in attrs.items()):
        return None
    parts = ['<input type="', _variable(kind), '" name="', _variable(name), '"']
    if operator.ne(value, None):  # the template's `!=`, not `is not`
        parts += [' value="', _stringformat(value), '"']
    for key, item in attrs.items():
        if item is not False:
            parts += [" ", _variable(key)]
            if item is not True:
                parts += ['="', _stringformat(item), '"']
    parts.append(">")
    return "".join(parts)


_WRITERS: dict[str, Callable[[dict[str, Any]], str | None]] = dict.fromkeys(INPUT_TEMPLATES, _input)


class PageFormRenderer(DjangoTemplates):
    """Django's template renderer, with the input widgets written directly (same HTML)."""

    def render(self, template_name: str, context: dict[str, Any], request: Any = None) -> SafeString | str:
        write = _WRITERS.get(template_name)
        if write is not None and request is None:
            html = write(context)
            if html is not None:
                return mark_safe(html)
        return super().render(template_name, context, request)


#: One instance per process: a renderer owns its template engine (and that engine's template cache).
PAGE_FORM_RENDERER = PageFormRenderer()
