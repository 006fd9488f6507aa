"""What the admin modules share."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the schedulers: operators look, they do not edit."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def node_name_html(name: str) -> SafeString:
    """A node name (``host:pid:random``) that a narrow column wraps after its colons, not inside
    a part (with static/css/admin.css's ``overflow-wrap``, not ``word-break: break-all``)."""
    return mark_safe(":<wbr>".join(conditional_escape(part) for part in name.split(":")))
