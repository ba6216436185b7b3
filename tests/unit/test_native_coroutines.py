"""No compiled coroutine waits inside an `except` or `finally` block.

Compiled with mypyc (2.4.1), a coroutine suspended inside an `except` block leaves the
exception it handles current for the whole thread: every other task on the loop sees it in
`sys.exc_info()`, and exceptions they raise meanwhile are chained to it (misleading logs, and
objects kept alive). The compiled modules therefore leave such blocks before they wait.
"""

from __future__ import annotations

import ast

from keeldb.native import MODULES, PACKAGE_DIR


def waits_inside_handlers(source: str) -> list[int]:
    """Line numbers of every `await`, `async with` and `async for` inside an `except` or
    `finally` block of `source` (a function defined there starts afresh)."""
    found: list[int] = []

    class Visitor(ast.NodeVisitor):
        depth = 0

        def _function(self, node: ast.AST) -> None:
            saved, self.depth = self.depth, 0
            self.generic_visit(node)
            self.depth = saved

        visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

        def visit_Try(self, node: ast.Try | ast.TryStar) -> None:
            for statement in [*node.body, *node.orelse]:
                self.visit(statement)
            self.depth += 1
            for handler in node.handlers:
                self.visit(handler)
            for statement in node.finalbody:
                self.visit(statement)
            self.depth -= 1

        visit_TryStar = visit_Try

        def _wait(self, node: ast.AST) -> None:
            if self.depth:
                found.append(node.lineno)  # type: ignore[attr-defined]
            self.generic_visit(node)

        visit_Await = visit_AsyncWith = visit_AsyncFor = _wait

    Visitor().visit(ast.parse(source))
    return found


def test_the_check_finds_waits_in_handlers() -> None:
    source = """
async def f():
    try:
        await a()
    except E:
        await b()
    finally:
        async with c():
            pass
    try:
        pass
    except E:
        async def g():
            await d()
        return g
"""
    assert waits_inside_handlers(source) == [6, 8]


def test_no_compiled_module_waits_inside_a_handler() -> None:
    found = {
        module: lines
        for module in MODULES
        if (lines := waits_inside_handlers((PACKAGE_DIR / module).read_text()))
    }
    assert found == {}
