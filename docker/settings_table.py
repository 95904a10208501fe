"""Markdown table of every service setting, generated from ``service.config.Settings`` (so docs can't drift).

    python docker/settings_table.py                          # print the table
    python docker/settings_table.py --write docs/operations.md

``--write`` replaces the text between ``<!-- settings-table:start -->`` and ``<!-- settings-table:end -->``
in each file that has those markers; tests/deploy/test_settings_doc.py fails when a table is stale.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from service.config import Settings

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
MIB = 1024 * 1024


def _type(info: FieldInfo) -> str:
    """Type with its bounds, e.g. ``int, 1..65535``, ``auto | cpu | cuda``."""
    ann = info.annotation
    if typing.get_origin(ann) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(ann))
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    origin = typing.get_origin(ann)
    if origin is list:
        name = f"list of {args[0].__name__}"
    elif args:
        name = " or ".join(a.__name__ for a in args)
    else:
        name = getattr(ann, "__name__", str(ann))
    name = {"Path": "path", "str": "string", "bool": "bool"}.get(name, name)
    bounds = []
    for m in info.metadata:
        if isinstance(m, Ge):
            bounds.append(f"≥ {m.ge}")
        elif isinstance(m, Gt):
            bounds.append(f"> {m.gt}")
        elif isinstance(m, Le):
            bounds.append(f"≤ {m.le}")
        elif isinstance(m, Lt):
            bounds.append(f"< {m.lt}")
    return ", ".join([name, *bounds])


def _default(name: str, info: FieldInfo) -> str:
    """The default as an environment value (``8388608 (8 MiB)``, ``true``, unset)."""
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`[]`" if not value else f"`{value!r}`"
    text = f"`{value}`"
    if name.endswith("_bytes") and isinstance(value, int) and value % MIB == 0:
        text += f" ({value // MIB} MiB)"
    return text


def settings_table() -> str:
    """One row per ``Settings`` field, in declaration order."""
    rows = ["| Variable | Default | Type | Meaning |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        rows.append(
            f"| `MADE_{name.upper()}` | {_default(name, info)} | {_type(info)} | {info.description or ''} |"
        )
    return "\n".join(rows) + "\n"


def replace_table(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    head, sep, rest = text.partition(START)
    if not sep or END not in rest:
        raise ValueError(f"markers {START} ... {END} not found")
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Print the table, or rewrite it in place in the given Markdown files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", nargs="+", type=Path, metavar="FILE", help="Markdown files to update")
    args = parser.parse_args(argv)
    table = settings_table()
    if not args.write:
        sys.stdout.write(table)
        return 0
    for path in args.write:
        path.write_text(replace_table(path.read_text(), table))
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
