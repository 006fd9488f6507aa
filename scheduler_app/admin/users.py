"""Each user's time zone in the admin (the one their new jobs start with)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from scheduler_app import schedules
from scheduler_app.models import UserProfile


class UserProfileForm(forms.ModelForm):
    class Meta:
        model = UserProfile
        fields = ["user", "timezone"]

    def clean_timezone(self) -> str:
        name = (self.cleaned_data.get("timezone") or "").strip()
        if name:
            try:
                schedules.zone(name)
            except schedules.ScheduleError as exc:
                raise ValidationError(str(exc)) from exc
        return name


@admin.register(UserProfile)
class UserProfileAdmin(admin.ModelAdmin):
    """Each user's time zone: the one their new jobs start with."""

    form = UserProfileForm
    list_display = ["user", "timezone"]
    search_fields = ["user__username", "timezone"]
    autocomplete_fields = ["user"]
