"""Rules about the code's shape that no linter checks (docs/architecture.md, "Imports and type hints")."""

import ast
import io
import os
import tokenize

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "agentsh")


def modules():
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def uncommented_local_imports(source, path="<source>"):
    """Line numbers of the imports inside a function with no comment on any of their lines."""
    commented = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                 if tok.type == tokenize.COMMENT}
    found = []

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                if not commented.intersection(range(child.lineno, child.end_lineno + 1)):
                    found.append(child.lineno)
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(source, path), False)
    return found


def test_every_function_local_import_says_why():
    """An import inside a function stays there only for a reason its comment gives (a heavy module off a
    hot path, say); anything else belongs at the top of the module."""
    bad = []
    for path in modules():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        rel = os.path.relpath(path, os.path.dirname(PACKAGE))
        bad += [f"{rel}:{line}" for line in uncommented_local_imports(source, path)]
    assert not bad, "function-local imports without a comment saying why (hoist them, or add one):\n" + "\n".join(bad)


def test_the_check_sees_nested_and_method_imports_and_accepts_a_comment():
    source = (
        "import os\n"
        "def f():\n"
        "    import json\n"
        "    import re  # lazy: only here\n"
        "    class C:\n"
        "        def m(self):\n"
        "            from x import (\n"
        "                y,\n"
        "            )\n"
        "            if y:\n"
        "                from z import w  # lazy: rare\n"
        "    return lambda: __import__('q')\n"
        "class D:\n"
        "    import sys\n"
    )
    assert uncommented_local_imports(source) == [3, 7]
