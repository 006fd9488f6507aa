"""Index only the runs that have a value: ``finished_at`` where it is set, ``cancelled_by``
where it is set.

PostgreSQL cannot make the engine's finish a HOT update (it changes ``status`` and
``finished_at``, both indexed), so every finished run writes an entry into each of the run
table's indexes, and every claimed run does the same on insert. A claimed (still unfinished)
run has neither value, and almost no run is ever cancelled by a user: with partial indexes a
run costs 7 index entries from claim to finish instead of 10 (docs/performance.md, "Saturation,
wave 2d"). Every query on either column compares it to a value, which implies ``IS NOT NULL``,
so PostgreSQL and SQLite both still use the indexes (retention's ``finished_at < cutoff``,
the alerts' ranges, Django's ``cancelled_by IN (..)`` when a user is deleted).

``cancelled_by``'s foreign key index is dropped by name (``_fk_indexes``), not by
``AlterField``: on SQLite that would copy the table to drop an index.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from ._fk_indexes import create_fk_indexes, drop_fk_indexes

CANCELLED_BY = ("jobrun", "cancelled_by")


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("scheduler_app", "0006_runs_and_lines_drop_redundant_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="jobrun", name="run_finished_idx"),
        migrations.AddIndex(
            model_name="jobrun",
            index=models.Index(
                condition=models.Q(finished_at__isnull=False), fields=["finished_at"], name="run_finished_idx"
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="jobrun",
                    name="cancelled_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                        verbose_name="cancelled by",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_fk_indexes(CANCELLED_BY), create_fk_indexes(CANCELLED_BY))],
        ),
        migrations.AddIndex(
            model_name="jobrun",
            index=models.Index(
                condition=models.Q(cancelled_by__isnull=False), fields=["cancelled_by"], name="run_cancelled_by_idx"
            ),
        ),
    ]
