"""What the doc tests share (tests/test_docs.py, tests/test_online_docs.py): a function or class found by its
qualified name in a module, and its body's source lines without the docstring, where the pages' quoted
statements must stand."""

import ast


def definition(tree, qualified):
    """The function or class node called ``qualified`` ("f", "Class", "Class.method") in a module tree, or None."""
    scope = tree.body
    node = None
    for part in qualified.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
        if node is None:
            return None
        scope = node.body
    return node


def body_lines(source, node):
    """The source lines of ``node``'s statements, its docstring left out."""
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value,
                                                                                                  str):
        body = body[1:]
    lines = source.splitlines()
    return [line for stmt in body for line in lines[stmt.lineno - 1:stmt.end_lineno]]
