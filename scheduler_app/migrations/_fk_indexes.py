"""Dropping (and, backwards, recreating) a foreign key's own index by name, for migrations.

Found by introspection and dropped with one statement, not by ``AlterField(db_index=False)``:
on SQLite that copies the whole table to drop an index. Not a migration itself: Django's
loader skips modules whose name starts with ``_``.
"""


def drop_fk_indexes(*foreign_keys: tuple[str, str]):
    """A ``RunPython`` function dropping the index of each ``(model, field)`` foreign key."""

    def drop(apps, schema_editor):
        for model_name, field_name in foreign_keys:
            model = apps.get_model("scheduler_app", model_name)
            column = model._meta.get_field(field_name).column
            for name in schema_editor._constraint_names(model, [column], index=True, unique=False):
                schema_editor.execute(schema_editor._delete_index_sql(model, name))

    return drop


def create_fk_indexes(*foreign_keys: tuple[str, str]):
    """The reverse of ``drop_fk_indexes``: the indexes Django makes for those foreign keys."""

    def create(apps, schema_editor):
        for model_name, field_name in foreign_keys:
            model = apps.get_model("scheduler_app", model_name)
            field = model._meta.get_field(field_name)
            schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))

    return create
