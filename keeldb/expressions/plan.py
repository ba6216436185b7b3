"""Update plans: the common shape of a resolved update, applied without its tree.

It owns one shortcut. An update whose every action is on a plain top-level attribute and
whose every operand is a value placeholder (`SET a = :v`, `REMOVE a`, `ADD a :n`,
`DELETE a :s`, in any mix) is reduced once, when its resolution is cached, to a plan: which
attribute each action writes, with which placeholder, in the order the general evaluator
writes them. A request that hits the cache applies the plan to its own values directly, with
no tree rebuilt for it and no walk over one; anything else (nested paths, functions,
arithmetic, paths on the right-hand side) is left to `evaluate.apply_update`.

The plan's result, and every error it raises, must be exactly the general evaluator's for
the same resolved update: the same new item (same attributes in the same insertion order,
values copied the same way), the same UpdateEffect, the same first error. It never checks
an expression (the resolver did, before any plan is made) and never changes an item it is
given.
"""

from __future__ import annotations

from typing import Any

from keeldb.expressions import ast
from keeldb.expressions.evaluate import UpdateEffect, _add, _copy, _delete, _path_order

Value = dict[str, Any]
Item = dict[str, Value]

# Types whose member is an immutable Python value (a str, or a bool): a copy of such a value
# is a new one-member dict, which is what `_copy` makes of it.
SCALAR_TYPES = frozenset(("S", "N", "B", "BOOL", "NULL"))

# Step kinds. A SET of a scalar value is the common case and has a kind of its own.
SET_SCALAR = 0
SET_COPY = 1
ADD = 2
DELETE = 3


class UpdatePlan:
    """A resolved update of top-level attributes, as steps to run against a request's values.

    `writes` are (kind, attribute, placeholder) in the general evaluator's write order,
    `removals` the removed attributes in its removal order, `names` the top-level attributes
    and `paths` the resolved paths of every action in the order written.
    """

    __slots__ = ("names", "paths", "removals", "writes")

    def __init__(
        self,
        writes: tuple[tuple[int, str, str], ...],
        removals: tuple[str, ...],
        paths: tuple[tuple[ast.PathPart, ...], ...],
    ) -> None:
        self.writes = writes
        self.removals = removals
        self.paths = paths
        self.names = frozenset(str(parts[0]) for parts in paths)

    def apply(self, values: dict[str, Value], item: Item | None) -> tuple[Item, UpdateEffect]:
        """What `apply_update` returns for the planned update with `values` bound; `item` is
        never changed (None: a new item)."""
        before: Item = item or {}
        # Copy on write, as the general evaluator does: top-level attributes are only ever
        # replaced or removed, so the old item's other values are shared.
        after: Item = dict(before)
        for kind, name, placeholder in self.writes:
            value = values[placeholder]
            if kind == SET_SCALAR:
                after[name] = dict(value)
            elif kind == SET_COPY:
                after[name] = _copy(value)
            elif kind == ADD:
                _add(after, (name,), value)
            else:
                _delete(after, (name,), value)
        # Removing from an item that does not exist is ignored, as DynamoDB does.
        if item is not None:
            for name in self.removals:
                after.pop(name, None)
        return after, UpdateEffect(self.paths, item, after)


def plan_update(tree: ast.UpdateExpression, placeholders: dict[int, str]) -> UpdatePlan | None:
    """The plan of a resolved update, or None when it is not of the planned shape.

    `placeholders` maps the id of each value the resolver put into the tree to the
    placeholder it came from (a Literal holds the very dict of the request's values).
    """
    writes: list[tuple[tuple[tuple[int, Any], ...], tuple[int, str, str]]] = []
    removals: list[tuple[tuple[tuple[int, Any], ...], str]] = []
    paths: list[tuple[ast.PathPart, ...]] = []
    for action in tree.actions():
        parts = action.path.parts
        if len(parts) != 1:
            return None
        name = parts[0]
        assert isinstance(name, str)
        paths.append(parts)
        order = _path_order(parts)
        if isinstance(action, ast.RemoveAction):
            removals.append((order, name))
            continue
        operand = action.value
        if type(operand) is not ast.Literal:
            return None
        placeholder = placeholders.get(id(operand.value))
        if placeholder is None:
            return None
        if isinstance(action, ast.SetAction):
            type_ = next(iter(operand.value))
            kind = SET_SCALAR if type_ in SCALAR_TYPES else SET_COPY
        elif isinstance(action, ast.AddAction):
            kind = ADD
        else:
            assert isinstance(action, ast.DeleteAction)
            kind = DELETE
        writes.append((order, (kind, name, placeholder)))
    # The general evaluator sorts writes by path (stably) and removals by path, backwards.
    writes.sort(key=lambda pair: pair[0])
    removals.sort(key=lambda pair: pair[0], reverse=True)
    return UpdatePlan(
        tuple(step for _, step in writes),
        tuple(name for _, name in removals),
        tuple(paths),
    )
