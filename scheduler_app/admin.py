"""The operators' admin (completed by the foundation work)."""

from django.contrib import admin

from scheduler_app.models import Job, JobRun, Plugin, SchedulerNode

admin.site.register(Plugin)
admin.site.register(Job)
admin.site.register(JobRun)
admin.site.register(SchedulerNode)
