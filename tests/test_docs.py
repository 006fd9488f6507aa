"""Meta-tests: every hook is documented (signature as heading) and tested; the docs' code runs.

Like datasette's test_docs.py: adding a hook to hookspecs.py without a section in
docs/PLUGIN_DEVELOPMENT.md or a test fails the suite.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from scheduler_app import hookspecs
from scheduler_app.contract import PROJECT_NAME, RunContext

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PLUGIN_DEVELOPMENT.md"
TESTS = ROOT / "tests"


def hooks() -> list[str]:
    return sorted(
        name
        for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and hasattr(obj, f"{PROJECT_NAME}_spec")
    )


def signature_heading(name: str) -> str:
    """``### `run(config: BaseModel, context: RunContext) -> None` `` as the doc must show it."""
    spec = getattr(hookspecs, name)
    sig = inspect.signature(spec)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"### `{name}({params}) -> {sig.return_annotation}`"


def test_there_are_hooks():
    assert hooks() == ["config", "run", "schema"]


@pytest.mark.parametrize("hook", hooks())
def test_every_hook_has_a_doc_section_with_its_signature(hook):
    doc = DOC.read_text()
    heading = signature_heading(hook)
    assert heading in doc.splitlines(), f"docs/PLUGIN_DEVELOPMENT.md lacks the heading {heading}"
    section = doc.split(heading, 1)[1].split("\n### ", 1)[0]
    for part in ("**Parameters:**", "**Returns:**", "**When it is called:**"):
        assert part in section, f"the section of {hook} lacks {part}"


@pytest.mark.parametrize("hook", hooks())
def test_every_hook_has_a_test(hook):
    pattern = re.compile(rf"^def test_hook_{hook}_\w+\(", re.MULTILINE)
    assert any(pattern.search(path.read_text()) for path in TESTS.glob("test_*.py")), (
        f"no test named test_hook_{hook}_... in tests/"
    )


def test_every_run_context_field_is_documented():
    doc = DOC.read_text()
    names = [f.name for f in dataclasses.fields(RunContext)] + ["should_stop", "sleep"]
    missing = [n for n in names if f"`{n}" not in doc]
    assert not missing, f"RunContext fields not in docs/PLUGIN_DEVELOPMENT.md: {missing}"


@pytest.mark.parametrize("command", ["runplugin", "startplugin", "reloadplugin", "plugins"])
def test_every_plugin_command_is_documented(command):
    assert f"manage.py {command}" in DOC.read_text()


def test_every_environment_variable_is_documented_for_operators():
    """settings.py and env.py read variables through env_* helpers or environ.get; operations.md
    lists each one in a table row (`` | `NAME` | ``)."""
    sources = (ROOT / "jobscheduler" / "settings.py").read_text() + (ROOT / "jobscheduler" / "env.py").read_text()
    names = set(re.findall(r'env_(?:str|bool|int|float|list)\(\s*"([A-Z_]+)"', sources))
    names |= set(re.findall(r'environ\.get\("([A-Z_]+)"', sources))
    names -= {"DJANGO_SETTINGS_MODULE"}
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "DB_POOL_MAX_SIZE" in names and "JOBSCHEDULER_PROCESS" in names
    assert not [n for n in sorted(names) if f"| `{n}` |" not in operations]
