"""docs/online.md cannot rot: every quoted statement sits inside the function it names, every algorithm and every
cell's step derivatives are quoted, and every snippet runs."""

import ast
import inspect
import os
import re

import pytest

from rnn_scratch.functional import CELLS
from rnn_scratch.online import api

from .doc_anchors import body_lines, definition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "online.md")
TEXT = open(PAGE, encoding="utf-8").read()
# [file.py · Qualified.name](../rnn_scratch/package/file.py): `statement`
REFERENCE = re.compile(r"\[(\w+\.py) · ([\w.]+)\]\(\.\./rnn_scratch/(\w+)/(\w+\.py)\):\s*`([^`]+)`")
SNIPPETS = re.compile(r"```python\n(.*?)```", re.S)


def _body_text(path, node):
    """The node's source without its docstring, each line stripped, joined by spaces."""
    return " ".join(line.strip() for line in body_lines(open(path, encoding="utf-8").read(), node))


def test_every_quoted_statement_is_inside_the_function_it_names():
    refs = REFERENCE.findall(TEXT)
    assert len(refs) >= 30
    assert TEXT.count("](../rnn_scratch/") == len(refs)  # no link in another form slips past this test
    for shown, qualified, package, target, code in refs:
        assert shown == target, (shown, target)
        path = os.path.join(ROOT, "rnn_scratch", package, target)
        node = definition(ast.parse(open(path, encoding="utf-8").read()), qualified)
        assert node is not None, f"{package}/{target} has no {qualified}"
        assert code.strip() in _body_text(path, node), f"{qualified} in {target} no longer contains {code!r}"


def test_every_algorithm_and_every_cells_derivatives_are_quoted():
    refs = {(package, target, qualified) for _, qualified, package, target, _ in REFERENCE.findall(TEXT)}
    files = {(package, target) for package, target, _ in refs}
    for cls in api.TRACKERS.values():
        assert ("online", os.path.basename(inspect.getsourcefile(cls))) in files, cls
    assert ("online", "bptt.py") in files
    for cell in CELLS.values():
        if cell.step_derivatives is not None:
            fn = cell.step_derivatives
            assert ("functional", os.path.basename(inspect.getsourcefile(fn)), fn.__name__) in refs, cell.name


@pytest.mark.parametrize("number", range(len(SNIPPETS.findall(TEXT))))
def test_snippet_runs(number, capsys):
    snippet = SNIPPETS.findall(TEXT)[number]
    exec(compile(snippet, f"{PAGE}:snippet{number}", "exec"), {})


def test_the_page_has_its_snippets():
    assert len(SNIPPETS.findall(TEXT)) == 3  # rtrl = bptt, the estimators' means, SnAp with a diagonal W_hh
