"""docs/derivations.md cannot rot: every quoted line is the line it names, and every snippet runs."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "derivations.md")
TEXT = open(PAGE, encoding="utf-8").read()
REFERENCE = re.compile(r"\[(\w+\.py)#L(\d+)\]\(\.\./rnn_scratch/functional/(\w+\.py)#L(\d+)\):\s*`([^`]+)`")
SNIPPETS = re.compile(r"```python\n(.*?)```", re.S)


def _code_lines(path):
    """The line numbers of statements inside functions (not docstrings, not comments between functions)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            body = node.body[1:] if isinstance(node.body[0], ast.Expr) and isinstance(
                node.body[0].value, ast.Constant) else node.body
            for stmt in body:
                lines.update(range(stmt.lineno, stmt.end_lineno + 1))
    return lines


def test_every_quoted_line_is_the_line_it_names():
    refs = REFERENCE.findall(TEXT)
    assert len(refs) >= 25
    for shown, line, target, target_line, code in refs:
        assert shown == target and line == target_line, (shown, line, target, target_line)
        path = os.path.join(ROOT, "rnn_scratch", "functional", target)
        with open(path, encoding="utf-8") as f:
            source = f.read().splitlines()
        assert code.strip() in source[int(line) - 1], f"{target}#L{line} is now {source[int(line) - 1].strip()!r}"
        assert int(line) in _code_lines(path), f"{target}#L{line} is not code inside a function"


@pytest.mark.parametrize("number", range(len(SNIPPETS.findall(TEXT))))
def test_snippet_runs(number, capsys):
    snippet = SNIPPETS.findall(TEXT)[number]
    exec(compile(snippet, f"{PAGE}:snippet{number}", "exec"), {})


def test_every_cell_has_a_snippet():
    assert len(SNIPPETS.findall(TEXT)) == 4  # RNN step, RNN through time, LSTM step, GRU step
