"""The docs list every setting: the generated table (docs/operations.md) is up to date."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

from service.config import Settings

from .conftest import REPO


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", REPO / "docker/settings_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_lists_every_setting_with_its_default() -> None:
    table = generator().settings_table()
    rows = re.findall(r"^\| `MADE_(\w+)` \| ([^|]+) \|", table, flags=re.M)
    assert [name.lower() for name, _ in rows] == list(Settings.model_fields)
    defaults = dict(rows)
    assert defaults["PORT"].strip() == "`8000`" and defaults["API_KEY"].strip() == "unset"
    assert defaults["MAX_BODY_BYTES"].strip() == "`8388608` (8 MiB)"


def test_docs_hold_the_current_table() -> None:
    gen = generator()
    table = gen.settings_table()
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    with_table = [p for p in docs if gen.START in p.read_text()]
    assert REPO / "docs" / "operations.md" in with_table
    for path in with_table:
        text = path.read_text()
        assert gen.replace_table(text, table) == text, (
            f"{path.name}: settings table is stale; run python docker/settings_table.py --write {path}"
        )
