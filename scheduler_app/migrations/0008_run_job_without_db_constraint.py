"""Runs keep their job as a foreign key in the ORM (deleting a job still deletes its runs) but
without a database constraint.

On PostgreSQL the constraint's check locks the job's row (``FOR KEY SHARE``) for every run a
claim inserts, a WAL record each, and a claim that met a job deleted meanwhile failed as a
whole: every other job's slot of that round was skipped. Claims now insert runs only for jobs
that exist (``claims.claim_slots``), queued runs of a job that is gone are never handed out,
and a run that slips past a concurrent deletion is swept (``retention.delete_orphans``).
docs/performance.md, "Runs without a foreign key constraint".
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler_app", "0007_run_partial_indexes"),
    ]

    operations = [
        migrations.AlterField(
            model_name="jobrun",
            name="job",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="runs",
                to="scheduler_app.job",
                verbose_name="job",
            ),
        ),
    ]
