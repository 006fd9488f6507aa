"""What the pages compute once instead of per request: each plugin's converted form schema,
per loaded code (a reload gets a fresh one)."""

from __future__ import annotations

from scheduler_app import config_forms, plugin_host
from tests.plugins.helpers import PluginFolder, module_path_fixture  # noqa: F401 - the fixture


def test_the_form_schema_is_built_once_per_loaded_code(module_path: PluginFolder, monkeypatch):
    package = module_path.write_good(marker="v1")
    plugin_host.get_plugin(package)  # loading checks the conversion once; count the pages' own
    built: list[str] = []
    convert = config_forms.jsonform_schema.to_jsonform_schema

    def counting(schema, model=None):
        built.append(package)
        return convert(schema, model)

    monkeypatch.setattr(config_forms.jsonform_schema, "to_jsonform_schema", counting)
    first = config_forms.form_schema(package)
    second = config_forms.form_schema(package)
    assert first == second and len(built) == 1
    # Each caller gets its own copy: a form that marks kept secrets changes only its own.
    first["properties"]["greeting"]["title"] = "changed by one form"
    assert config_forms.form_schema(package)["properties"]["greeting"]["title"] != "changed by one form"


def test_a_reloaded_plugin_gets_the_schema_of_its_new_code(module_path: PluginFolder):
    package = module_path.write_good(marker="v1")
    assert "greeting" in config_forms.form_schema(package)["properties"]
    module_path.write(
        """
        from pydantic import BaseModel
        from scheduler_app import JobPlugin, hookimpl

        class Config(BaseModel):
            farewell: str = "bye"

        class Plugin(JobPlugin):
            Config = Config

            @hookimpl
            async def run(self, config, context):
                context.logger.info(config.farewell)
        """
    )
    plugin_host.reload(package)
    assert list(config_forms.form_schema(package)["properties"]) == ["farewell"]
