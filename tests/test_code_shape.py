"""The shape STYLE.md asks of peftlab's source, as ruff formats it: no module over 450 lines, no
function over 80. A module that grows past it is split where a reader would look for its parts
(a report section, a family of figures), not squeezed."""

import ast

import pytest
from testkit import REPO

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
MODULES = sorted((REPO / "src" / "peftlab").rglob("*.py"))


def test_the_source_is_found():
    assert len(MODULES) > 100


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO / "src")))
def test_modules_and_functions_stay_short(path):
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{lines} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, ", ".join(long)
