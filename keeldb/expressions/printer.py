"""The printer: a written expression tree back to expression text.

It owns the canonical text of a tree: `parse(print(tree)) == tree` for every tree the parser
can produce, with parentheses only where precedence needs them (never the redundant double
parentheses DynamoDB rejects). It never parses, checks or evaluates, and it prints only
written trees (a resolved `Literal` has no text form).
"""

from __future__ import annotations

from keeldb.expressions import ast

# Binding strength of condition nodes: a child weaker than its parent needs parentheses.
_OR, _AND, _NOT, _ATOM = 1, 2, 3, 4


def path_text(path: ast.Path) -> str:
    out = []
    for i, part in enumerate(path.parts):
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif i == 0:
            out.append(part)
        else:
            out.append("." + part)
    return "".join(out)


def operand_text(node: ast.Operand) -> str:
    if isinstance(node, ast.Path):
        return path_text(node)
    if isinstance(node, ast.ValueRef):
        return node.name
    if isinstance(node, ast.Function):
        return f"{node.name}({', '.join(_term_text(arg) for arg in node.args)})"
    if isinstance(node, ast.Arithmetic):
        return f"{_term_text(node.left)} {node.op} {_term_text(node.right)}"
    assert not isinstance(node, ast.Literal), "a resolved value has no text form"
    raise AssertionError(f"not an operand: {node!r}")


def _term_text(node: ast.Operand) -> str:
    text = operand_text(node)
    return f"({text})" if isinstance(node, ast.Arithmetic) else text


def _strength(node: ast.Condition) -> int:
    if isinstance(node, ast.Or):
        return _OR
    if isinstance(node, ast.And):
        return _AND
    if isinstance(node, ast.Not):
        return _NOT
    return _ATOM


def condition_text(node: ast.Condition) -> str:
    if isinstance(node, ast.Or):
        return f"{_child(node.left, _OR)} OR {_child(node.right, _OR + 1)}"
    if isinstance(node, ast.And):
        return f"{_child(node.left, _AND)} AND {_child(node.right, _AND + 1)}"
    if isinstance(node, ast.Not):
        return f"NOT {_child(node.operand, _NOT)}"
    if isinstance(node, ast.Compare):
        return f"{operand_text(node.left)} {node.op} {operand_text(node.right)}"
    if isinstance(node, ast.Between):
        low, high = operand_text(node.low), operand_text(node.high)
        return f"{operand_text(node.operand)} BETWEEN {low} AND {high}"
    if isinstance(node, ast.In):
        options = ", ".join(operand_text(option) for option in node.options)
        return f"{operand_text(node.operand)} IN ({options})"
    if isinstance(node, ast.Function):
        return operand_text(node)
    raise AssertionError(f"not a condition: {node!r}")


def _child(node: ast.Condition, strength_min: int) -> str:
    text = condition_text(node)
    return f"({text})" if _strength(node) < strength_min else text


def update_text(node: ast.UpdateExpression) -> str:
    clauses = []
    for clause in node.clauses:
        actions = ", ".join(_action_text(action) for action in clause.actions)
        clauses.append(f"{clause.kind} {actions}")
    return " ".join(clauses)


def _action_text(action: ast.Action) -> str:
    if isinstance(action, ast.SetAction):
        return f"{path_text(action.path)} = {operand_text(action.value)}"
    if isinstance(action, ast.RemoveAction):
        return path_text(action.path)
    return f"{path_text(action.path)} {operand_text(action.value)}"


def projection_text(node: ast.ProjectionExpression) -> str:
    return ", ".join(path_text(path) for path in node.paths)


def to_text(node: ast.Node) -> str:
    """The expression text of any written tree."""
    if isinstance(node, ast.UpdateExpression):
        return update_text(node)
    if isinstance(node, ast.ProjectionExpression):
        return projection_text(node)
    if isinstance(node, (ast.Compare, ast.Between, ast.In, ast.And, ast.Or, ast.Not)):
        return condition_text(node)
    return operand_text(node)
