"""The operators' admin: plugins, every user's jobs, runs with their logs, scheduler nodes, users'
time zones, the audit trail and alerts, one module each.

Everything that changes a job or a plugin goes through ``services`` (validation, the one-active
rule, notifying the schedulers); actions dispatch and return, they never run a plugin inside
the request.
"""

from django.contrib import admin

from scheduler_app.admin import jobs, nodes, ops, plugins, runs, users  # noqa: F401 (each registers its models)

admin.site.site_header = "jobscheduler"
admin.site.site_title = "jobscheduler"
admin.site.index_title = "Operations"
# The app list beside every page costs 300 px that the run and plugin lists need at 1280 px.
admin.site.enable_nav_sidebar = False
