"""Drop three indexes that repeat the start of a unique constraint's index.

``JobRun.job_id`` and ``run_job_slot_idx`` (job, -slot) are served by the unique
(job, slot, attempt) (read backwards for -slot); ``LogLine.run_id`` by the unique (run, seq).
Each cost a B-tree page written per claimed run: the claims insert one row per job, so every
job-led index takes one scattered page per row (docs/performance.md, "Engine").

The foreign keys' indexes are dropped by name (``_fk_indexes``), not by ``AlterField``:
on SQLite that would copy both tables to drop an index.
"""

import django.db.models.deletion
from django.db import migrations, models

from ._fk_indexes import create_fk_indexes, drop_fk_indexes

FOREIGN_KEYS = [("jobrun", "job"), ("logline", "run")]


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler_app", "0005_schedulernode_lost_at"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="jobrun",
            name="run_job_slot_idx",
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="jobrun",
                    name="job",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="scheduler_app.job",
                        verbose_name="job",
                    ),
                ),
                migrations.AlterField(
                    model_name="logline",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="log_lines",
                        to="scheduler_app.jobrun",
                        verbose_name="run",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_fk_indexes(*FOREIGN_KEYS), create_fk_indexes(*FOREIGN_KEYS))],
        ),
    ]
