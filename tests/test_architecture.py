"""Who may import whom (ARCHITECTURE.md): the science core and the public schemas stay free of
web, queue and database code, so that the benchmarks, the simulator and any other program can
use them as a library, and so that a result depends only on its inputs and parameters."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCIENCE_THIRD_PARTY = {"numpy", "scipy", "pysam", "pyliftover"}
RULES = {
    # package directory: (allowed first-party prefixes, allowed third-party top-level names)
    "services/genomics": (("services.genomics", "services.errors"), SCIENCE_THIRD_PARTY),
    "schemas": (("schemas",), {"pydantic"}),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, nested ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_pure_packages_import_only_what_they_may(package: str) -> None:
    first_party, third_party = RULES[package]
    offences = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__" or top in third_party:
                continue
            if any(module == p or module.startswith(p + ".") for p in first_party):
                continue
            offences.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offences, "\n".join(offences)


def test_the_rule_catches_an_offence(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from sqlalchemy import select\n    return select\n")
    assert imports_of(module) == [(2, "sqlalchemy")]
