"""The limits that keep the code cheap to change, checked on every run.

No module over 600 lines, no class over 250, no function over 60 (docstring
included), and no test module importing another test module: tests share
helpers through ``tests/support`` only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import modelvault

PACKAGE = Path(modelvault.__file__).parent
TESTS = Path(__file__).parent
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 600, 250, 60


def sources(root: Path) -> list[Path]:
    # An installed package holds the Alembic revisions too: each is a table of DDL, not code.
    skipped = {"__pycache__", "schema_revisions"}
    return sorted(p for p in root.rglob("*.py") if not skipped & set(p.parts))


def definitions(path: Path) -> Iterator[tuple[str, str, int]]:
    """(kind, qualified name, lines) of each class and function in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            yield "class", node.name, _lines(node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield "function", node.name, _lines(node)


def _lines(node: ast.AST) -> int:
    end = getattr(node, "end_lineno", None) or 0
    return end - getattr(node, "lineno", 0) + 1


def test_no_module_is_over_600_lines() -> None:
    too_long = {
        str(p.relative_to(PACKAGE)): n
        for p in sources(PACKAGE)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE
    }
    assert too_long == {}


def test_no_class_is_over_250_lines_and_no_function_over_60() -> None:
    limit = {"class": MAX_CLASS, "function": MAX_FUNCTION}
    too_long = [
        f"{p.relative_to(PACKAGE)}: {kind} {name} ({n} lines)"
        for p in sources(PACKAGE)
        for kind, name, n in definitions(p)
        if n > limit[kind]
    ]
    assert too_long == []


def test_the_limits_are_seen_where_they_are_broken(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    sample = tmp_path / "long.py"
    sample.write_text(f"def long():\n{body}\n\nclass Short:\n    pass\n", encoding="utf-8")
    found = {(kind, name): n for kind, name, n in definitions(sample)}
    assert found[("function", "long")] == 62 > MAX_FUNCTION
    assert found[("class", "Short")] == 2


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_tests_import_only_the_support_package_and_modelvault() -> None:
    own = {p.stem for p in TESTS.glob("*.py")}
    own |= {"tests." + name for name in own}
    borrowed = {
        str(path.relative_to(TESTS)): sorted(imported_modules(path) & own)
        for path in sources(TESTS)
        if imported_modules(path) & own
    }
    assert borrowed == {}
