"""Drop three indexes that repeat the start of a unique constraint's index.

``JobRun.job_id`` and ``run_job_slot_idx`` (job, -slot) are served by the unique
(job, slot, attempt) (read backwards for -slot); ``LogLine.run_id`` by the unique (run, seq).
Each cost a B-tree page written per claimed run: the claims insert one row per job, so every
job-led index takes one scattered page per row (docs/performance.md, "Engine").

The foreign keys' indexes are dropped by name (found by introspection), not by ``AlterField``:
on SQLite that would copy both tables to drop an index.
"""

import django.db.models.deletion
from django.db import migrations, models

FOREIGN_KEYS = [("jobrun", "job"), ("logline", "run")]


def drop_fk_indexes(apps, schema_editor):
    for model_name, field_name in FOREIGN_KEYS:
        model = apps.get_model("scheduler_app", model_name)
        column = model._meta.get_field(field_name).column
        for name in schema_editor._constraint_names(model, [column], index=True, unique=False):
            schema_editor.execute(schema_editor._delete_index_sql(model, name))


def create_fk_indexes(apps, schema_editor):
    for model_name, field_name in FOREIGN_KEYS:
        model = apps.get_model("scheduler_app", model_name)
        field = model._meta.get_field(field_name)
        schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))


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
            database_operations=[migrations.RunPython(drop_fk_indexes, create_fk_indexes)],
        ),
    ]
