"""docs/derivations.md cannot rot: every quoted statement is code of the function it names, every snippet runs,
and every registered cell has its derivation (its step functions quoted and run in a snippet)."""

import ast
import functools
import os
import re

import pytest

from rnn_scratch.functional import CELLS

from .doc_anchors import body_lines, definition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "derivations.md")
TEXT = open(PAGE, encoding="utf-8").read()
REFERENCE = re.compile(r"\[(\w+\.py): ([\w.]+)\]\(\.\./rnn_scratch/functional/(\w+\.py)\):\s*`([^`]+)`")
SNIPPETS = re.compile(r"```python\n(.*?)```", re.S)


def _function_code(path, name):
    """The source lines of the statements of function ``name`` (``Class.method`` for a method) in ``path``: its
    body without the docstring, or None when there is no such function."""
    source = open(path, encoding="utf-8").read()
    node = definition(ast.parse(source), name)
    return body_lines(source, node) if isinstance(node, ast.FunctionDef) else None


def test_every_quoted_statement_is_code_of_the_function_it_names():
    refs = REFERENCE.findall(TEXT)
    assert len(refs) >= 25
    for shown, function, target, code in refs:
        assert shown == target, (shown, target)
        lines = _function_code(os.path.join(ROOT, "rnn_scratch", "functional", target), function)
        assert lines is not None, f"{target} has no function {function}"
        assert any(code.strip() in line for line in lines), f"{target}: {function} has no statement {code!r}"


def test_the_anchor_check_fails_on_a_moved_statement(tmp_path):
    """The check finds a statement by its function, not its line: a line added above changes nothing, a statement
    moved to another function is caught."""
    path = tmp_path / "cell.py"
    path.write_text("import os\n\n\ndef f(x):\n    \"\"\"Doc.\"\"\"\n    y = x + 1\n    return y\n\n\n"
                    "def g(x):\n    return x\n")
    assert any("y = x + 1" in line for line in _function_code(str(path), "f"))
    assert not any("y = x + 1" in line for line in _function_code(str(path), "g"))
    assert not any("Doc." in line for line in _function_code(str(path), "f"))  # docstrings are not code


@pytest.mark.parametrize("number", range(len(SNIPPETS.findall(TEXT))))
def test_snippet_runs(number, capsys):
    snippet = SNIPPETS.findall(TEXT)[number]
    exec(compile(snippet, f"{PAGE}:snippet{number}", "exec"), {})


def _function_name(fn):
    return (fn.func if isinstance(fn, functools.partial) else fn).__name__


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_cell_has_a_derivation(cell):
    """Its step forward and step backward are quoted, and a snippet calls both."""
    record = CELLS[cell]
    quoted = {function for _, function, _, _ in REFERENCE.findall(TEXT)}
    names = [_function_name(record.step_forward), _function_name(record.step_backward)]
    assert set(names) <= quoted, f"{cell}: {names} are not both quoted in docs/derivations.md"
    assert any(all(n in snippet for n in names) for snippet in SNIPPETS.findall(TEXT)), \
        f"{cell}: no snippet of docs/derivations.md runs {names}"
