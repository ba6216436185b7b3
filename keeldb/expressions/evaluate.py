"""Evaluating resolved expressions against items: conditions, updates and projections.

It owns DynamoDB's run-time semantics: comparisons between different types (or with a
missing attribute) are false rather than errors, `<>` is true for them; size() counts UTF-16
code units of a string, bytes of a binary and elements of sets, lists and maps; an update
reads every operand from the item as it was before the update and raises DynamoDB's errors
for operands of the wrong type and paths that cannot be written. It never changes an item it
is given (updates build a new one) and never parses or checks expression text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keeldb.expressions import ast
from keeldb.model.errors import ValidationException
from keeldb.model.numbers import add_numbers, subtract_numbers
from keeldb.model.values import compare_values, decode_binary, value_type, values_equal

Value = dict[str, Any]
Item = dict[str, Value]

INVALID_PATH_MESSAGE = "The document path provided in the update expression is invalid for update"
INCORRECT_TYPE_MESSAGE = "An operand in the update expression has an incorrect data type"
MISSING_ATTRIBUTE_MESSAGE = (
    "The provided expression refers to an attribute that does not exist in the item"
)
SET_TYPES = ("SS", "NS", "BS")


# --- reading ---------------------------------------------------------------------------------


def get_path(item: Item | None, parts: tuple[ast.PathPart, ...]) -> Value | None:
    """The value at a resolved path, or None when any step is missing or of the wrong type."""
    if item is None:
        return None
    first = parts[0]
    assert isinstance(first, str)
    current = item.get(first)
    for part in parts[1:]:
        if current is None:
            return None
        if isinstance(part, int):
            elements = current.get("L")
            if elements is None or part >= len(elements):
                return None
            current = elements[part]
        else:
            members = current.get("M")
            if members is None:
                return None
            current = members.get(part)
    return current


def size_of(value: Value | None) -> Value | None:
    """size(): string length in UTF-16 code units (as DynamoDB counts), binary length in
    bytes, element counts of sets, lists and maps; None for other types and missing values."""
    if value is None:
        return None
    type_ = value_type(value)
    if type_ == "S":
        count = len(value["S"].encode("utf-16-le")) // 2
    elif type_ == "B":
        count = len(decode_binary(value["B"]))
    elif type_ in ("SS", "NS", "BS", "L", "M"):
        count = len(value[type_])
    else:
        return None
    return {"N": str(count)}


def operand_value(node: ast.Operand, item: Item | None) -> Value | None:
    if isinstance(node, ast.Path):
        return get_path(item, node.parts)
    if isinstance(node, ast.Literal):
        return node.value
    if isinstance(node, ast.Function) and node.name == "size":
        return size_of(operand_value(node.args[0], item))
    raise AssertionError(f"not a condition operand: {node!r}")


# --- conditions ------------------------------------------------------------------------------


def evaluate(node: ast.Condition, item: Item | None) -> bool:
    """Whether a resolved condition holds for `item` (None: the item does not exist)."""
    if isinstance(node, ast.And):
        return evaluate(node.left, item) and evaluate(node.right, item)
    if isinstance(node, ast.Or):
        return evaluate(node.left, item) or evaluate(node.right, item)
    if isinstance(node, ast.Not):
        return not evaluate(node.operand, item)
    if isinstance(node, ast.Compare):
        return compare(node.op, operand_value(node.left, item), operand_value(node.right, item))
    if isinstance(node, ast.Between):
        value = operand_value(node.operand, item)
        low = operand_value(node.low, item)
        high = operand_value(node.high, item)
        return compare(">=", value, low) and compare("<=", value, high)
    if isinstance(node, ast.In):
        value = operand_value(node.operand, item)
        if value is None:
            return False
        for option in node.options:
            candidate = operand_value(option, item)
            if candidate is not None and values_equal(value, candidate):
                return True
        return False
    if isinstance(node, ast.Function):
        return _function(node, item)
    raise AssertionError(f"not a resolved condition: {node!r}")


def compare(op: str, left: Value | None, right: Value | None) -> bool:
    """A comparison: false when a side is missing or the types differ, except `<>`."""
    if op == "<>":
        return left is None or right is None or not values_equal(left, right)
    if left is None or right is None:
        return False
    if op == "=":
        return values_equal(left, right)
    order = compare_values(left, right)
    if order is None:
        return False
    if op == "<":
        return order < 0
    if op == "<=":
        return order <= 0
    if op == ">":
        return order > 0
    assert op == ">=", op
    return order >= 0


def _function(node: ast.Function, item: Item | None) -> bool:
    name = node.name
    if name == "attribute_exists":
        return operand_value(node.args[0], item) is not None
    if name == "attribute_not_exists":
        return operand_value(node.args[0], item) is None
    first = operand_value(node.args[0], item)
    second = operand_value(node.args[1], item)
    if first is None or second is None:
        return False
    if name == "attribute_type":
        return value_type(second) == "S" and value_type(first) == second["S"]
    if name == "begins_with":
        return _begins_with(first, second)
    if name == "contains":
        return _contains(first, second)
    raise AssertionError(f"not a condition function: {name}")


def _begins_with(value: Value, prefix: Value) -> bool:
    type_ = value_type(value)
    if type_ != value_type(prefix):
        return False
    if type_ == "S":
        return bool(value["S"].startswith(prefix["S"]))
    if type_ == "B":
        return decode_binary(value["B"]).startswith(decode_binary(prefix["B"]))
    return False


def _contains(value: Value, operand: Value) -> bool:
    type_ = value_type(value)
    operand_type = value_type(operand)
    if type_ == "S":
        return operand_type == "S" and operand["S"] in value["S"]
    if type_ == "B":
        return operand_type == "B" and decode_binary(operand["B"]) in decode_binary(value["B"])
    if type_ in SET_TYPES:
        element_type = type_[0]
        if operand_type != element_type:
            return False
        return any(values_equal({element_type: m}, operand) for m in value[type_])
    if type_ == "L":
        return any(values_equal(element, operand) for element in value["L"])
    return False


# --- updates ---------------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts, lists, strings, booleans)."""
    if isinstance(value, dict):
        return {key: _copy(member) for key, member in value.items()}
    if isinstance(value, list):
        return [_copy(member) for member in value]
    return value


def update_value(node: ast.Operand, item: Item) -> Value:
    """The value of a SET right-hand side, read from the item before the update."""
    if isinstance(node, ast.Literal):
        return node.value
    if isinstance(node, ast.Path):
        value = get_path(item, node.parts)
        if value is None:
            raise ValidationException(MISSING_ATTRIBUTE_MESSAGE)
        return value
    if isinstance(node, ast.Arithmetic):
        left, right = update_value(node.left, item), update_value(node.right, item)
        if value_type(left) != "N" or value_type(right) != "N":
            raise ValidationException(INCORRECT_TYPE_MESSAGE)
        if node.op == "+":
            return {"N": add_numbers(left["N"], right["N"])}
        return {"N": subtract_numbers(left["N"], right["N"])}
    if isinstance(node, ast.Function):
        if node.name == "if_not_exists":
            path = node.args[0]
            assert isinstance(path, ast.Path)
            existing = get_path(item, path.parts)
            return existing if existing is not None else update_value(node.args[1], item)
        assert node.name == "list_append", node.name
        first, second = update_value(node.args[0], item), update_value(node.args[1], item)
        if value_type(first) != "L" or value_type(second) != "L":
            raise ValidationException(INCORRECT_TYPE_MESSAGE)
        return {"L": [*first["L"], *second["L"]]}
    raise AssertionError(f"not an update operand: {node!r}")


def _parent(item: Item, parts: tuple[ast.PathPart, ...]) -> Any:
    """The container the last part of `parts` lives in: the item itself (a dict of attributes),
    a map's members (dict) or a list's elements (list); None when it does not exist."""
    container: Any = item
    for i, part in enumerate(parts[:-1]):
        if i == 0:
            value = container.get(part)
        elif isinstance(part, int):
            value = container[part] if part < len(container) else None
        else:
            value = container.get(part)
        if value is None:
            return None
        following = parts[i + 1]
        if isinstance(following, int):
            container = value.get("L")
        else:
            container = value.get("M")
        if container is None:
            return None
    return container


def _parent_or_raise(item: Item, parts: tuple[ast.PathPart, ...]) -> Any:
    container = _parent(item, parts)
    if container is None:
        raise ValidationException(INVALID_PATH_MESSAGE)
    return container


def _write(item: Item, parts: tuple[ast.PathPart, ...], value: Value) -> None:
    container = _parent_or_raise(item, parts)
    last = parts[-1]
    if isinstance(last, int):
        if last >= len(container):
            container.append(value)  # Past the end: DynamoDB appends.
        else:
            container[last] = value
    else:
        container[last] = value


def _remove(item: Item, parts: tuple[ast.PathPart, ...]) -> None:
    # Removing an attribute or element that is not there changes nothing, but the path up to
    # it must lead to a map (or list), as for SET.
    container = _parent_or_raise(item, parts)
    last = parts[-1]
    if isinstance(last, int):
        if last < len(container):
            del container[last]
    else:
        container.pop(last, None)


def _add(item: Item, parts: tuple[ast.PathPart, ...], operand: Value) -> None:
    existing = get_path(item, parts)
    type_ = value_type(operand)
    if existing is None:
        _write(item, parts, _copy(operand))
        return
    if value_type(existing) != type_:
        raise ValidationException(INCORRECT_TYPE_MESSAGE)
    if type_ == "N":
        _write(item, parts, {"N": add_numbers(existing["N"], operand["N"])})
        return
    assert type_ in SET_TYPES, type_
    members = list(existing[type_])
    for member in operand[type_]:
        if not any(values_equal({type_[0]: m}, {type_[0]: member}) for m in members):
            members.append(member)
    _write(item, parts, {type_: members})


def _delete(item: Item, parts: tuple[ast.PathPart, ...], operand: Value) -> None:
    existing = get_path(item, parts)
    if existing is None:
        return
    type_ = value_type(operand)
    if value_type(existing) != type_:
        raise ValidationException(INCORRECT_TYPE_MESSAGE)
    element = type_[0]
    members = [
        m
        for m in existing[type_]
        if not any(values_equal({element: m}, {element: o}) for o in operand[type_])
    ]
    if members:
        _write(item, parts, {type_: members})
    else:
        _remove(item, parts)  # DynamoDB has no empty sets: the attribute goes away.


@dataclass(frozen=True)
class UpdateEffect:
    """What an update touched, for ReturnValues UPDATED_OLD and UPDATED_NEW."""

    paths: tuple[tuple[ast.PathPart, ...], ...]
    old_item: Item | None
    new_item: Item

    def updated_old(self) -> Item:
        """The touched attributes as they were before the update (nested paths projected)."""
        return project(self.old_item or {}, self.paths)

    def updated_new(self) -> Item:
        """The touched attributes as they are after the update (nested paths projected)."""
        return project(self.new_item, self.paths)


def apply_update(update: ast.UpdateExpression, item: Item | None) -> tuple[Item, UpdateEffect]:
    """The item after a resolved update; `item` is never changed (None: a new item)."""
    before: Item = item or {}
    actions = update.actions()
    # Copy on write: `after` shares the attributes the update leaves alone with `before`.
    # A top-level path is only ever replaced or removed in `after`; a nested path changes
    # a container inside its attribute, so that attribute alone is copied deeply first.
    after: Item = dict(before)
    for action in actions:
        name = action.path.parts[0]
        if len(action.path.parts) > 1 and name in before and after[name] is before[name]:
            after[name] = _copy(before[name])
    # Every right-hand side reads the item as it was before the update.
    values = [
        update_value(action.value, before) if isinstance(action, ast.SetAction) else None
        for action in actions
    ]
    # Writes go in path order: "If you add multiple elements in a single SET operation, the
    # elements are sorted in order by element number" (Developer Guide, "Update
    # expressions"). Paths never overlap, so the order matters only for appends to a list.
    writes = sorted(
        (
            (action, value)
            for action, value in zip(actions, values)
            if not isinstance(action, ast.RemoveAction)
        ),
        key=lambda pair: _path_order(pair[0].path.parts),
    )
    for action, value in writes:
        parts = action.path.parts
        if isinstance(action, ast.SetAction):
            assert value is not None
            _write(after, parts, _copy(value))
        elif isinstance(action, ast.AddAction):
            assert isinstance(action.value, ast.Literal)
            _add(after, parts, action.value.value)
        else:
            assert isinstance(action, ast.DeleteAction)
            assert isinstance(action.value, ast.Literal)
            _delete(after, parts, action.value.value)
    # List indexes of REMOVE refer to the list before the update: remove from the back so
    # that earlier removals do not shift the later ones. Removing from an item that does not
    # exist is ignored whatever the path, as DynamoDB does.
    removals = [a.path.parts for a in actions if isinstance(a, ast.RemoveAction)]
    if item is not None:
        for parts in sorted(removals, key=_path_order, reverse=True):
            _remove(after, parts)
    paths = tuple(action.path.parts for action in actions)
    return after, UpdateEffect(paths, item, after)


def _path_order(parts: tuple[ast.PathPart, ...]) -> tuple[tuple[int, Any], ...]:
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in parts)


# --- projections -----------------------------------------------------------------------------


def project(item: Item, paths: tuple[tuple[ast.PathPart, ...], ...]) -> Item:
    """The parts of `item` named by resolved paths, nested as in the item; list elements keep
    their order and close up, and paths that lead nowhere are left out."""
    tree: dict[ast.PathPart, Any] = {}
    for parts in paths:
        node = tree
        for i, part in enumerate(parts):
            if i == len(parts) - 1:
                node[part] = True  # the whole value
            else:
                child = node.get(part)
                if child is True:
                    break  # an enclosing path already takes the whole value
                node = node.setdefault(part, {})
    out: Item = {}
    for name, selection in tree.items():
        assert isinstance(name, str)
        if name in item:
            picked = _pick(item[name], selection)
            if picked is not None:
                out[name] = picked
    return out


def _pick(value: Value, selection: Any) -> Value | None:
    if selection is True:
        copied: Value = _copy(value)
        return copied
    keys = list(selection)
    if isinstance(keys[0], int):
        elements = value.get("L")
        if elements is None:
            return None
        picked_elements = []
        for index in sorted(k for k in keys if isinstance(k, int)):
            if index < len(elements):
                picked = _pick(elements[index], selection[index])
                if picked is not None:
                    picked_elements.append(picked)
        return {"L": picked_elements} if picked_elements else None
    members = value.get("M")
    if members is None:
        return None
    picked_members = {}
    for key in keys:
        if isinstance(key, str) and key in members:
            picked = _pick(members[key], selection[key])
            if picked is not None:
                picked_members[key] = picked
    return {"M": picked_members} if picked_members else None
