"""Mapping expressions evaluated without a Jinja render, when their shape allows it.

A compiled Jinja expression builds a render context on every call, which costs more
than the expression itself for the common shapes: a path into the payload
(`body.data.object.customer`), a filter or a test on it (`| email`,
`| lookup('products')`, `is defined`), `and`, `or`, `not` and comparisons.
`evaluator(node, env, names)` turns such an expression into nested functions that make
exactly the calls the code Jinja generates for it makes, in the same order: `env.getattr`
and `env.getitem` for every step (so the sandbox still decides what a payload may reach,
and a missing field is the same `StrictUndefined`), the same filter and test functions,
and Python's own `and`, `or`, `not` and comparison operators, which are what Jinja's
generated code uses. The result, or the exception, is the same
(tests/mapping/test_mapping_direct.py compares both on every recipe and fixture).

Any other shape (calls, arithmetic, literals, conditional expressions, a filter that
needs the render context such as `lead_email`, an operator the sandbox intercepts, a
name other than the mapping's own variables, such as `self`, which Jinja binds to the
template itself) gives None, and the expression stays with Jinja.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Environment, nodes
from jinja2.utils import _PassArg

Evaluator = Callable[[Mapping[str, Any]], Any]

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda left, right: left in right,
    "notin": lambda left, right: left not in right,
}
_MISSING = object()


class _Unsupported(Exception):
    """A node this module does not evaluate: Jinja renders the expression."""


def evaluator(node: nodes.Expr, env: Environment, names: frozenset[str]) -> Evaluator | None:
    """A function of the render variables giving what `node` gives under `env`, or None
    when the expression has a shape left to Jinja. `names` are the variables the caller
    always passes; an expression naming anything else, or an environment with globals,
    is left to Jinja."""
    if env.globals:
        return None
    try:
        return _build(node, env, names)
    except _Unsupported:
        return None


def _build(node: nodes.Node, env: Environment, names: frozenset[str]) -> Evaluator:
    if isinstance(node, nodes.Const):
        value = node.value
        return lambda _variables: value
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in names:
        return _name(node.name, env)
    if isinstance(node, nodes.Getattr) and node.ctx == "load":
        return _getattr(_build(node.node, env, names), node.attr, env)
    if isinstance(node, nodes.Getitem) and node.ctx == "load":
        if isinstance(node.arg, nodes.Slice):
            raise _Unsupported
        return _getitem(_build(node.node, env, names), _build(node.arg, env, names), env)
    if isinstance(node, nodes.And | nodes.Or):
        return _logical(node, env, names)
    if isinstance(node, nodes.Not):
        if "not " in getattr(env, "intercepted_unops", ()):
            raise _Unsupported
        operand = _build(node.node, env, names)
        return lambda variables: not operand(variables)
    if isinstance(node, nodes.Compare):
        return _compare(node, env, names)
    if isinstance(node, nodes.Filter | nodes.Test):
        return _apply(node, env, names)
    raise _Unsupported


def _name(name: str, env: Environment) -> Evaluator:
    undefined = env.undefined

    def load(variables):
        value = variables.get(name, _MISSING)
        return undefined(name=name) if value is _MISSING else value

    return load


def _getattr(target: Evaluator, attribute: str, env: Environment) -> Evaluator:
    get = env.getattr
    return lambda variables: get(target(variables), attribute)


def _getitem(target: Evaluator, argument: Evaluator, env: Environment) -> Evaluator:
    get = env.getitem
    return lambda variables: get(target(variables), argument(variables))


def _logical(node: nodes.And | nodes.Or, env: Environment, names: frozenset[str]) -> Evaluator:
    if node.operator in getattr(env, "intercepted_binops", ()):
        raise _Unsupported
    left, right = _build(node.left, env, names), _build(node.right, env, names)
    if isinstance(node, nodes.And):
        return lambda variables: left(variables) and right(variables)
    return lambda variables: left(variables) or right(variables)


def _compare(node: nodes.Compare, env: Environment, names: frozenset[str]) -> Evaluator:
    """Python's chained comparison: `a < b < c` is `a < b and b < c`, `b` evaluated once,
    and the answer is the first false result or the last result."""
    first = _build(node.expr, env, names)
    steps = [(_COMPARE[operand.op], _build(operand.expr, env, names)) for operand in node.ops]

    def compare(variables):
        left = first(variables)
        for compared, evaluate in steps:
            right = evaluate(variables)
            result = compared(left, right)
            if not result:
                return result
            left = right
        return result

    return compare


def _apply(node: nodes.Filter | nodes.Test, env: Environment, names: frozenset[str]) -> Evaluator:
    functions = env.filters if isinstance(node, nodes.Filter) else env.tests
    function = functions.get(node.name)
    if (
        function is None
        or _PassArg.from_obj(function) is not None
        or node.node is None
        or node.dyn_args is not None
        or node.dyn_kwargs is not None
    ):
        raise _Unsupported
    target = _build(node.node, env, names)
    args = [_build(arg, env, names) for arg in node.args]
    kwargs = [(kwarg.key, _build(kwarg.value, env, names)) for kwarg in node.kwargs]
    if not args and not kwargs:
        return lambda variables: function(target(variables))

    def apply(variables):
        value = target(variables)
        positional = [arg(variables) for arg in args]
        return function(value, *positional, **{key: kw(variables) for key, kw in kwargs})

    return apply
